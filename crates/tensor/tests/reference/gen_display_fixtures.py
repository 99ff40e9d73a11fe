"""NumPy's layout for the Display tests (crates/tensor/tests/ops/display.rs).
Run with a numpy venv outside the repo:

    /tmp/peers/bin/python crates/tensor/tests/reference/gen_display_fixtures.py

and commit the JSON it writes (display_fixtures.json). Each case is written as
`np.array2string(x, separator=", ", prefix="tensor(")`, the values part of
`tensor(..., shape=.., dtype=..)`; the Rust side rebuilds x from `data`/`shape`.
Scientific notation is left out: NumPy writes exponents as e+05, Rust as e5
(the choice of notation is NumPy's, checked in the Rust tests).
"""
import json
import os

import numpy as np

cases = {
    "matrix_2x2": np.array([[1.0, 2.5], [-3.0, 4.0]], dtype=np.float32),
    "scalar": np.array(0.25, dtype=np.float64),
    "vector_7": np.arange(7, dtype=np.float32),
    "rank3": np.arange(12, dtype=np.float64).reshape(2, 2, 3) / 4.0,
    "long_row_wraps": (np.arange(30, dtype=np.float64) * 0.37) - 3.0,
    "summarized_matrix": (np.arange(100 * 100, dtype=np.float32).reshape(100, 100) % 9 + 1) / 4.0,
    "summarized_vector": np.arange(2000, dtype=np.float64) % 97 * 0.5 + 1.0,
    "summarized_rank3": np.arange(11 * 11 * 11, dtype=np.float32).reshape(11, 11, 11) % 13 + 1,
    "rank4_small": np.arange(16, dtype=np.float32).reshape(2, 2, 2, 2) - 8.0,
    "fractions": np.array([0.1, 0.2, 0.3, 1.0 / 3.0], dtype=np.float32),
    "negative_zero_and_ints": np.array([[-1.0, 0.0], [10.0, 100.0]], dtype=np.float64),
}

out = {}
for name, x in cases.items():
    out[name] = {
        "shape": list(x.shape),
        "data": [float(v) for v in x.reshape(-1)],
        "dtype": "f32" if x.dtype == np.float32 else "f64",
        "text": np.array2string(x, separator=", ", prefix="tensor("),
    }

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "display_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path)
