"""Reference values for rime-layers' layer tests, computed with Keras 3 (TensorFlow backend).

Run from the repository root with a Python that has keras 3 and tensorflow:

    python tests/reference/gen_layer_fixtures.py

It writes tests/reference/layer_fixtures.json. Everything is float64 so the Rust
tests can compare tightly. Inputs come from a fixed NumPy seed and are stored in
the fixture, so the tests never need Python.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras.config.set_floatx("float64")
rng = np.random.default_rng(20240521)


def arr(a):
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": a.reshape(-1).tolist()}


def randn(*shape):
    return rng.standard_normal(shape)


def grads(layer, x, w, training):
    """y = layer(x), and the gradients of sum(y * w) with respect to x and
    the layer's trainable weights (in their creation order)."""
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(xt, training=training)
        loss = tf.reduce_sum(y * w)
    g = tape.gradient(loss, [xt] + layer.trainable_weights)
    return y.numpy(), [t.numpy() for t in g]


def batch_norm_case(name, x, cfg, w, frozen=False):
    layer = keras.layers.BatchNormalization(dtype="float64", **cfg)
    layer.build(x.shape)
    n = x.shape[cfg.get("axis", -1)]
    weights = {}
    # gamma, beta (as configured) and non-default moving statistics, so the
    # update formula is exercised away from its initial values
    for v in layer.weights:
        short = v.path.split("/")[-1]
        if short == "moving_variance":
            val = rng.uniform(0.5, 2.0, n)
        else:
            val = randn(n)
        v.assign(val)
        weights[short] = arr(val)
    if frozen:
        layer.trainable = False
    y_train, g_train = grads(layer, x, w, training=True)
    moved = {
        "moving_mean": arr(layer.moving_mean.numpy()),
        "moving_variance": arr(layer.moving_variance.numpy()),
    }
    y_infer, g_infer = grads(layer, x, w, training=False)
    names = ["x"] + [v.path.split("/")[-1] for v in layer.trainable_weights]
    return {
        "name": name,
        "config": cfg,
        "frozen": frozen,
        "x": arr(x),
        "w": arr(w),
        "weights": weights,
        "y_train": arr(y_train),
        "grads_train": {k: arr(g) for k, g in zip(names, g_train)},
        "after_step": moved,
        "y_infer": arr(y_infer),
        "grads_infer": {k: arr(g) for k, g in zip(names, g_infer)},
    }


def layer_norm_case(name, x, cfg, w):
    layer = keras.layers.LayerNormalization(dtype="float64", **cfg)
    layer.build(x.shape)
    weights = {}
    for v in layer.weights:
        val = randn(*v.shape)
        v.assign(val)
        weights[v.path.split("/")[-1]] = arr(val)
    y, g = grads(layer, x, w, training=False)
    names = ["x"] + [v.path.split("/")[-1] for v in layer.trainable_weights]
    return {
        "name": name,
        "config": cfg,
        "x": arr(x),
        "w": arr(w),
        "weights": weights,
        "y": arr(y),
        "grads": {k: arr(gg) for k, gg in zip(names, g)},
    }


def embedding_case():
    layer = keras.layers.Embedding(6, 3, dtype="float64")
    layer.build((None,))
    table = randn(6, 3)
    layer.embeddings.assign(table)
    ids = np.array([[0, 5, 2], [2, 2, 1]])
    w = randn(2, 3, 3)
    with tf.GradientTape() as tape:
        y = layer(ids)
        loss = tf.reduce_sum(y * w)
    (g,) = tape.gradient(loss, [layer.embeddings])
    g = tf.convert_to_tensor(g)  # IndexedSlices -> dense (duplicates summed)
    return {
        "input_dim": 6,
        "output_dim": 3,
        "table": arr(table),
        "ids": arr(ids),
        "w": arr(w),
        "y": arr(y.numpy()),
        "grad_table": arr(g.numpy()),
    }


def merge_cases():
    out = []
    for cls, shapes in [
        ("Add", [[2, 3], [2, 3], [2, 3]]),
        ("Add", [[2, 1], [2, 3, 1]]),
        ("Add", [[2, 4, 1], [2, 1, 3]]),
        ("Multiply", [[2, 3], [2, 3]]),
        ("Multiply", [[2, 3, 1], [2, 1], [2, 3, 4]]),
    ]:
        xs = [randn(*s) for s in shapes]
        layer = getattr(keras.layers, cls)(dtype="float64")
        y = layer(xs)
        out.append(
            {
                "class": cls,
                "config": {},
                "inputs": [arr(x) for x in xs],
                "y": arr(y.numpy()),
            }
        )
    for axis, shapes in [(-1, [[2, 3], [2, 1]]), (1, [[2, 1, 3], [2, 4, 3]]), (0, [[1, 2], [3, 2]])]:
        xs = [randn(*s) for s in shapes]
        y = keras.layers.Concatenate(axis=axis, dtype="float64")(xs)
        out.append(
            {
                "class": "Concatenate",
                "config": {"axis": axis},
                "inputs": [arr(x) for x in xs],
                "y": arr(y.numpy()),
            }
        )
    for fmt, shape in [("channels_last", [2, 3, 2]), ("channels_first", [2, 3, 2, 2]), ("channels_last", [4])]:
        x = randn(*shape)
        y = keras.layers.Flatten(data_format=fmt, dtype="float64")(x)
        out.append(
            {
                "class": "Flatten",
                "config": {"data_format": fmt},
                "inputs": [arr(x)],
                "y": arr(y.numpy()),
            }
        )
    for target, shape in [([-1, 2], [2, 3, 4]), ([4, 3], [2, 12]), ([6], [3, 2, 3])]:
        x = randn(*shape)
        y = keras.layers.Reshape(target, dtype="float64")(x)
        out.append(
            {
                "class": "Reshape",
                "config": {"target_shape": target},
                "inputs": [arr(x)],
                "y": arr(y.numpy()),
            }
        )
    return out


def main():
    bn = [
        batch_norm_case("bn_2d_default", randn(6, 3), {}, randn(6, 3)),
        batch_norm_case(
            "bn_3d_axis1",
            randn(3, 4, 2) * 2.0 + 1.0,
            {"axis": 1, "momentum": 0.9, "epsilon": 1e-2},
            randn(3, 4, 2),
        ),
        batch_norm_case(
            "bn_4d_no_center",
            randn(2, 2, 3, 2),
            {"axis": -1, "center": False},
            randn(2, 2, 3, 2),
        ),
        batch_norm_case("bn_frozen", randn(5, 2), {}, randn(5, 2), frozen=True),
    ]
    ln = [
        layer_norm_case("ln_2d_default", randn(4, 5), {}, randn(4, 5)),
        layer_norm_case("ln_3d_axes12", randn(2, 3, 4) * 3.0, {"axis": [1, 2]}, randn(2, 3, 4)),
        layer_norm_case("ln_3d_axis1_eps", randn(2, 3, 2), {"axis": 1, "epsilon": 0.1}, randn(2, 3, 2)),
        layer_norm_case("ln_no_scale", randn(3, 4), {"scale": False}, randn(3, 4)),
    ]
    fixtures = {
        "generator": "tests/reference/gen_layer_fixtures.py",
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "batch_normalization": bn,
        "layer_normalization": ln,
        "embedding": embedding_case(),
        "merge_and_reshape": merge_cases(),
    }
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "layer_fixtures.json"), "w") as f:
        json.dump(fixtures, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
