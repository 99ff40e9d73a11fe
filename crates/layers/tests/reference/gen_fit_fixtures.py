"""Keras 3 `fit` histories for crates/layers/tests/fit.rs.

Run: /tmp/peers/bin/python crates/layers/tests/reference/gen_fit_fixtures.py
Writes fit_fixtures.json beside this script. Small MLPs, shuffle=False, given
initial weights; each case records the initial weights, the data, the
per-epoch history, the final weights and an `evaluate` on the validation data.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402


def case(name, optimizer, epochs, batch_size, validation, seed):
    rng = np.random.default_rng(seed)
    n = 20
    x = rng.normal(size=(n, 4)).astype(np.float32)
    # labels with some structure so accuracy moves
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    kwargs = dict(batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    out = {"name": name, "epochs": epochs, "batch_size": batch_size}
    if validation == "split":
        kwargs["validation_split"] = 0.25
        out["validation_split"] = 0.25
        split = int(n * 0.75)
        xv, yv = x[split:], y[split:]
    else:
        xv = rng.normal(size=(6, 4)).astype(np.float32)
        yv = ((xv[:, 0] > 0).astype(np.int64) + (xv[:, 1] > 0.5).astype(np.int64)).astype(np.float32)
        kwargs["validation_data"] = (xv, yv)
        out["x_val"] = xv.tolist()
        out["y_val"] = yv.tolist()
    history = model.fit(x, y, **kwargs).history
    ev = model.evaluate(xv, yv, batch_size=4, verbose=0, return_dict=True)
    out.update(
        x=x.tolist(),
        y=y.tolist(),
        initial_weights=[w.tolist() for w in weights],
        history={k: [float(v) for v in vs] for k, vs in history.items()},
        final_weights=[w.tolist() for w in model.get_weights()],
        evaluate=ev,
    )
    return out


cases = [
    case("sgd_momentum_split", keras.optimizers.SGD(learning_rate=0.1, momentum=0.9), 4, 8, "split", 0),
    case("adam_validation_data", keras.optimizers.Adam(learning_rate=0.05), 5, 6, "data", 1),
]
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fit_fixtures.json")
with open(path, "w") as f:
    json.dump({"keras_version": keras.__version__, "cases": cases}, f, indent=1)
print("wrote", path)
