"""Keras 3 reference values for the trainability rule tests of rules 1, 3
and 6 (docs/design.md; tests/trainability.rs). Run with a TensorFlow venv outside the repo:

    /tmp/peers/bin/python tests/reference/gen_rule_fixtures.py

and commit the JSON it writes (tests/reference/rule_fixtures.json). All inputs
are written out explicitly so the Rust side rebuilds the same problem.
"""
import json
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

rng = np.random.default_rng(7)


def arr(shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def tolist(x):
    return np.asarray(x, dtype=np.float64).tolist()


out = {}

# ---- rule 1: custom layer, w trainable, b added with trainable=False -----------------
class Affine(keras.layers.Layer):
    def __init__(self, w0, b0):
        super().__init__()
        self.w0, self.b0 = w0, b0

    def build(self, input_shape):
        self.w = self.add_weight(shape=self.w0.shape, initializer=keras.initializers.Constant(self.w0), name="w")
        self.b = self.add_weight(shape=self.b0.shape, initializer=keras.initializers.Constant(self.b0), name="b", trainable=False)

    def call(self, x):
        return tf.matmul(x, self.w) + self.b


x_b, y_b, w0, b0 = arr((4, 3)), arr((4, 2)), arr((3, 2), 0.5), arr((2,), 0.5)
layer = Affine(w0, b0)
layer(x_b)
assert [v.name for v in layer.trainable_weights] == ["w"]
opt = keras.optimizers.SGD(learning_rate=0.1)
mse = keras.losses.MeanSquaredError()
losses = []
for _ in range(3):
    with tf.GradientTape() as tape:
        loss = mse(y_b, layer(x_b))
    grads = tape.gradient(loss, layer.trainable_weights)
    opt.apply_gradients(zip(grads, layer.trainable_weights))
    losses.append(float(loss))
out["rule1"] = dict(x=tolist(x_b), y=tolist(y_b), w0=tolist(w0), b0=tolist(b0), lr=0.1,
                     losses=tolist(losses), w=tolist(layer.w.numpy()), b=tolist(layer.b.numpy()))

# ---- rule 3: a Dense layer shared by two models -------------------------------------
# rime's rule: freezing model1 does not freeze the shared layer inside model2.
# Keras' `model.trainable = False` would propagate to the shared layer, so the
# model-level flag is emulated here by the variable list each step trains.
x_d, y_d = arr((6, 4)), arr((6, 2))
ks, bs = arr((4, 3), 0.5), arr((3,), 0.1)
k1, b1 = arr((3, 2), 0.5), arr((2,), 0.1)
k2, b2 = arr((3, 2), 0.5), arr((2,), 0.1)
shared = keras.layers.Dense(3, activation="tanh")
head1, head2 = keras.layers.Dense(2), keras.layers.Dense(2)
inp1, inp2 = keras.Input((4,)), keras.Input((4,))
model1 = keras.Model(inp1, head1(shared(inp1)))
model2 = keras.Model(inp2, head2(shared(inp2)))
shared.set_weights([ks, bs]); head1.set_weights([k1, b1]); head2.set_weights([k2, b2])
opt = keras.optimizers.SGD(learning_rate=0.05)
losses = []
for _ in range(3):
    variables = model2.trainable_weights  # shared + head2
    with tf.GradientTape() as tape:
        loss = mse(y_d, model2(x_d, training=True))
    opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    losses.append(float(loss))
out["rule3"] = dict(x=tolist(x_d), y=tolist(y_d), lr=0.05,
                     shared=[tolist(ks), tolist(bs)], head1=[tolist(k1), tolist(b1)], head2=[tolist(k2), tolist(b2)],
                     losses_model2=tolist(losses),
                     shared_after=[tolist(v) for v in shared.get_weights()],
                     head2_after=[tolist(v) for v in head2.get_weights()],
                     model1_out_after=tolist(model1(x_d)))

# ---- rule 6: BatchNormalization, frozen and trainable ---------------------------------
x_e = arr((5, 3), 2.0) + 1.0
gamma, beta = arr((3,), 0.3) + 1.0, arr((3,), 0.3)
mmean, mvar = arr((3,), 0.5), np.abs(arr((3,))) + 0.5


def make_bn():
    bn = keras.layers.BatchNormalization()  # momentum 0.99, epsilon 1e-3
    bn.build((None, 3))
    bn.set_weights([gamma, beta, mmean, mvar])
    return bn


frozen = make_bn()
frozen.trainable = False
assert len(frozen.trainable_weights) == 0
frozen_train_out = frozen(x_e, training=True)
frozen_infer_out = frozen(x_e, training=False)
trainable = make_bn()
train_out = trainable(x_e, training=True)
assert [w.name for w in trainable.trainable_weights] == ["gamma", "beta"]
mm_after, mv_after = trainable.moving_mean.numpy(), trainable.moving_variance.numpy()
# gradient of sum(out * c) w.r.t. gamma and beta, for the trainable layer in training
c = arr((5, 3))
bn2 = make_bn()
with tf.GradientTape() as tape:
    o = bn2(x_e, training=True)
    s = tf.reduce_sum(o * c)
g_gamma, g_beta = tape.gradient(s, [bn2.gamma, bn2.beta])
out["rule6"] = dict(x=tolist(x_e), gamma=tolist(gamma), beta=tolist(beta),
                     moving_mean=tolist(mmean), moving_variance=tolist(mvar), c=tolist(c),
                     frozen_training_out=tolist(frozen_train_out), frozen_inference_out=tolist(frozen_infer_out),
                     frozen_moving_mean_after=tolist(frozen.moving_mean.numpy()),
                     frozen_moving_variance_after=tolist(frozen.moving_variance.numpy()),
                     trainable_training_out=tolist(train_out),
                     trainable_moving_mean_after=tolist(mm_after), trainable_moving_variance_after=tolist(mv_after),
                     grad_gamma=tolist(g_gamma), grad_beta=tolist(g_beta))

out["_generator"] = f"keras {keras.__version__}, tensorflow {tf.__version__}"
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rule_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path)
