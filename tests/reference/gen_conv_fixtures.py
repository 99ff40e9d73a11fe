"""Reference values for rime's convolution and pooling layers, computed with
Keras 3 (TensorFlow backend) in float32.

Run from the repository root with a Python that has keras 3 and tensorflow
(the project uses /tmp/peers/bin/python):

    python tests/reference/gen_conv_fixtures.py

It writes tests/reference/conv_fixtures.json: for every layer case the
constructor arguments (rime's and Keras' names are the same), the input, the
weights, the output and the gradients of sum(y * w) with respect to the input
and the trainable weights; and a few Adam steps of a small CNN whose first
conv filters are frozen (in Keras: their gradients zeroed from the first
step, which leaves Adam's moments at zero and the values untouched -- what
rime's mask guarantees).
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

rng = np.random.default_rng(20251205)


def arr(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


CLASSES = {
    "Conv1D": keras.layers.Conv1D,
    "Conv2D": keras.layers.Conv2D,
    "DepthwiseConv2D": keras.layers.DepthwiseConv2D,
    "Conv2DTranspose": keras.layers.Conv2DTranspose,
    "MaxPooling1D": keras.layers.MaxPooling1D,
    "MaxPooling2D": keras.layers.MaxPooling2D,
    "AveragePooling1D": keras.layers.AveragePooling1D,
    "AveragePooling2D": keras.layers.AveragePooling2D,
    "GlobalAveragePooling1D": keras.layers.GlobalAveragePooling1D,
    "GlobalAveragePooling2D": keras.layers.GlobalAveragePooling2D,
    "GlobalMaxPooling1D": keras.layers.GlobalMaxPooling1D,
    "GlobalMaxPooling2D": keras.layers.GlobalMaxPooling2D,
    "ZeroPadding2D": keras.layers.ZeroPadding2D,
    "UpSampling2D": keras.layers.UpSampling2D,
}


def case(name, cls, config, x_shape):
    layer = CLASSES[cls](**config)
    x = randn(*x_shape)
    layer.build(x.shape)
    weights = [randn(*w.shape, scale=0.5) for w in layer.weights]
    if weights:
        layer.set_weights(weights)
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(xt)
        w = tf.constant(randn(*y.shape))
        loss = tf.reduce_sum(y * w)
    g = tape.gradient(loss, [xt] + layer.trainable_weights)
    return {
        "name": name,
        "class_name": cls,
        "config": config,
        "x": arr(x),
        "weights": [arr(v) for v in weights],
        "w": arr(w.numpy()),
        "y": arr(y.numpy()),
        "grads": [arr(t.numpy()) for t in g],
    }


conv = dict(activation="tanh")
cases = [
    case("conv2d valid", "Conv2D", dict(filters=3, kernel_size=[3, 3], **conv), [2, 6, 5, 2]),
    case("conv2d same stride 2 odd", "Conv2D",
         dict(filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same", **conv), [2, 7, 7, 3]),
    case("conv2d same stride 2 even", "Conv2D",
         dict(filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same", **conv), [2, 8, 8, 3]),
    case("conv2d same stride 2 even kernel 2", "Conv2D",
         dict(filters=2, kernel_size=[2, 4], strides=[2, 2], padding="same"), [1, 6, 7, 2]),
    case("conv2d dilation", "Conv2D",
         dict(filters=3, kernel_size=[3, 3], dilation_rate=[2, 2], padding="same", **conv), [2, 7, 8, 2]),
    case("conv2d valid dilation", "Conv2D",
         dict(filters=2, kernel_size=[2, 3], dilation_rate=[2, 1]), [1, 6, 6, 2]),
    case("conv2d groups", "Conv2D",
         dict(filters=4, kernel_size=[3, 3], groups=2, **conv), [2, 5, 5, 4]),
    case("conv1d same stride 2", "Conv1D",
         dict(filters=3, kernel_size=[3], strides=[2], padding="same", **conv), [2, 9, 2]),
    case("conv1d dilation", "Conv1D",
         dict(filters=2, kernel_size=[2], dilation_rate=[3]), [2, 8, 3]),
    case("depthwise same stride 2", "DepthwiseConv2D",
         dict(kernel_size=[3, 3], strides=[2, 2], padding="same", depth_multiplier=2, **conv), [2, 7, 6, 3]),
    case("depthwise valid", "DepthwiseConv2D", dict(kernel_size=[2, 2]), [1, 4, 4, 2]),
    case("transpose valid stride 2", "Conv2DTranspose",
         dict(filters=3, kernel_size=[3, 3], strides=[2, 2], **conv), [2, 4, 3, 2]),
    case("transpose same stride 2", "Conv2DTranspose",
         dict(filters=2, kernel_size=[3, 3], strides=[2, 2], padding="same"), [1, 3, 4, 3]),
    case("transpose valid stride 3 kernel 2", "Conv2DTranspose",
         dict(filters=2, kernel_size=[2, 2], strides=[3, 3]), [1, 2, 3, 2]),
    case("max pool same stride 2 odd", "MaxPooling2D",
         dict(pool_size=[2, 2], padding="same"), [2, 5, 7, 3]),
    case("max pool 3 stride 2", "MaxPooling2D",
         dict(pool_size=[3, 3], strides=[2, 2]), [1, 7, 8, 2]),
    case("avg pool same 3 stride 2", "AveragePooling2D",
         dict(pool_size=[3, 3], strides=[2, 2], padding="same"), [2, 5, 6, 2]),
    case("avg pool valid", "AveragePooling2D", dict(pool_size=[2, 2]), [1, 4, 5, 2]),
    case("max pool 1d same", "MaxPooling1D", dict(pool_size=[2], padding="same"), [2, 7, 3]),
    case("avg pool 1d same stride 1", "AveragePooling1D",
         dict(pool_size=[3], strides=[1], padding="same"), [2, 6, 2]),
    case("global avg 2d", "GlobalAveragePooling2D", dict(), [2, 3, 4, 3]),
    case("global max 2d keepdims", "GlobalMaxPooling2D", dict(keepdims=True), [2, 3, 4, 3]),
    case("global avg 1d", "GlobalAveragePooling1D", dict(), [2, 5, 3]),
    case("global max 1d", "GlobalMaxPooling1D", dict(), [2, 5, 3]),
    case("zero padding", "ZeroPadding2D", dict(padding=[[1, 2], [0, 1]]), [2, 3, 3, 2]),
    case("upsampling", "UpSampling2D", dict(size=[2, 3]), [2, 2, 3, 2]),
]


def training():
    """Adam on conv(4, 3x3, relu) -> max pool 2 -> flatten -> dense(3), with
    conv filters 0..2 frozen."""
    conv = keras.layers.Conv2D(4, (3, 3), activation="relu")
    pool = keras.layers.MaxPooling2D((2, 2))
    flat = keras.layers.Flatten()
    dense = keras.layers.Dense(3)
    x = randn(6, 8, 8, 1)
    labels = rng.integers(0, 3, size=6)
    model = keras.Sequential([keras.Input((8, 8, 1)), conv, pool, flat, dense])
    init = [randn(*w.shape, scale=0.4) for w in model.weights]
    model.set_weights(init)
    opt = keras.optimizers.Adam(learning_rate=0.01)
    frozen = np.zeros((3, 3, 1, 4), dtype=np.float32)
    frozen[..., 2:] = 1.0  # trainable filters 2..4
    losses, steps = [], []
    for _ in range(4):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        g = tape.gradient(loss, model.trainable_weights)
        g[0] = g[0] * frozen
        g[1] = g[1] * frozen[0, 0, 0]
        opt.apply_gradients(zip(g, model.trainable_weights))
        losses.append(float(loss.numpy()))
        steps.append([arr(w.numpy()) for w in model.weights])
    return {
        "x": arr(x),
        "labels": [int(v) for v in labels],
        "init": [arr(w) for w in init],
        "losses": losses,
        "steps": steps,
        "trainable_filters": [2, 4],
    }


out = {"keras": keras.__version__, "tensorflow": tf.__version__, "layers": cases, "training": training()}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {path}: {len(cases)} layer cases")
