"""Keras 3 `fit` of an integer-input Embedding model for crates/layers/tests/fit.rs.

Run: /tmp/peers/bin/python crates/layers/tests/reference/gen_embedding_fit_fixtures.py
Writes embedding_fit_fixtures.json beside this script. `Input(shape=(5,),
dtype="int32")` -> Embedding(20, 4) -> GlobalAveragePooling1D -> Dense(3),
given initial weights, SGD(momentum) and sparse categorical cross-entropy,
shuffle=False; records the ids, labels, per-epoch history, final weights and
`predict` on the first batch.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402

rng = np.random.default_rng(12)
n, steps, vocab, dim, classes = 12, 5, 20, 4, 3
ids = rng.integers(0, vocab, size=(n, steps)).astype(np.int32)
labels = (ids[:, 0] % classes).astype(np.int64)
inputs = keras.Input(shape=(steps,), dtype="int32")
h = keras.layers.Embedding(vocab, dim)(inputs)
h = keras.layers.GlobalAveragePooling1D()(h)
outputs = keras.layers.Dense(classes)(h)
model = keras.Model(inputs, outputs)
weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()]
model.set_weights(weights)
model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=0.5, momentum=0.9),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["sparse_categorical_accuracy"],
)
history = model.fit(ids, labels, batch_size=4, epochs=3, shuffle=False, verbose=0).history
out = {
    "vocab": vocab,
    "dim": dim,
    "classes": classes,
    "batch_size": 4,
    "epochs": 3,
    "ids": ids.tolist(),
    "labels": labels.tolist(),
    "initial_weights": [w.tolist() for w in weights],
    "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    "final_weights": [w.tolist() for w in model.get_weights()],
    "predict": model.predict(ids[:4], verbose=0).tolist(),
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedding_fit_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f)
print("wrote", path)
