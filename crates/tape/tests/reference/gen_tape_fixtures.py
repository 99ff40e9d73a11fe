"""JAX reference values for rime-tape's higher-derivative and rule tests
(crates/tape/tests/reference_jax.rs). Run with a JAX venv outside the repo:

    /tmp/peers/bin/python crates/tape/tests/reference/gen_tape_fixtures.py

and commit the JSON it writes next to this script (tape_fixtures.json). Every
input is written out explicitly (float64, row-major, with its shape), so the
Rust side rebuilds the same problem without Python.
"""
import json
import os

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.scipy.special import logsumexp  # noqa: E402

rng = np.random.default_rng(20240611)


def arr(shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def pos(shape, lo=0.5, hi=2.0):
    return rng.uniform(lo, hi, shape)


def t(x):
    """A tensor as {shape, data} (row-major float64)."""
    x = np.asarray(x, dtype=np.float64)
    return {"shape": list(x.shape), "data": x.reshape(-1).tolist()}


out = {"jax_version": jax.__version__}

# ---- second derivatives of sin and tanh ---------------------------------------
xs = np.array([-2.3, -0.7, 0.0, 0.4, 1.1, 2.9])
d2 = {}
for name, f in [("sin", jnp.sin), ("tanh", jnp.tanh)]:
    g = jax.grad(f)
    gg = jax.grad(g)
    ggg = jax.grad(gg)
    d2[name] = {
        "d1": [float(g(x)) for x in xs],
        "d2": [float(gg(x)) for x in xs],
        "d3": [float(ggg(x)) for x in xs],
    }
out["derivatives"] = {"x": xs.tolist(), **d2}

# ---- Hessian-vector product of a small MLP loss --------------------------------
# logits = tanh(x @ w1 + b1) @ w2 + b2; loss = mean sparse softmax cross entropy


def mlp_loss(params, x, labels):
    w1, b1, w2, b2 = params
    h = jnp.tanh(x @ w1 + b1)
    logits = h @ w2 + b2
    ls = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(ls, labels[:, None], axis=1))


x = arr((5, 3))
labels = np.array([0, 2, 1, 1, 0])
params = (arr((3, 4), 0.7), arr((4,), 0.3), arr((4, 3), 0.7), arr((3,), 0.3))
vec = tuple(arr(p.shape) for p in params)
loss, grads = jax.value_and_grad(mlp_loss)(params, x, labels)
_, hvp = jax.jvp(lambda p: jax.grad(mlp_loss)(p, x, labels), (params,), (vec,))
names = ["w1", "b1", "w2", "b2"]
out["mlp_hvp"] = {
    "x": t(x),
    "labels": labels.tolist(),
    "params": {n: t(p) for n, p in zip(names, params)},
    "v": {n: t(p) for n, p in zip(names, vec)},
    "loss": float(loss),
    "grad": {n: t(g) for n, g in zip(names, grads)},
    "hvp": {n: t(h) for n, h in zip(names, hvp)},
}

# ---- gradient penalties, differentiated with respect to the weights ------------
# f(x) = softplus(x @ w1 + b1) @ w2, one output per example;
# g = d(sum f)/dx (the per-example input gradients);
# penalty_sq = sum(g^2) / batch;  penalty_gp = mean((|g_i| - 1)^2) (WGAN-GP)


def critic(params, x):
    w1, b1, w2 = params
    return jax.nn.softplus(x @ w1 + b1) @ w2


def input_grad(params, x):
    return jax.grad(lambda x: critic(params, x).sum())(x)


def penalty_sq(params, x):
    g = input_grad(params, x)
    return jnp.sum(g**2) / x.shape[0]


def penalty_gp(params, x):
    g = input_grad(params, x)
    n = jnp.sqrt(jnp.sum(g**2, axis=1))
    return jnp.mean((n - 1.0) ** 2)


xg = arr((4, 3))
pg = (arr((3, 5), 0.8), arr((5,), 0.3), arr((5, 1), 0.8))
gnames = ["w1", "b1", "w2"]
out["grad_penalty"] = {
    "x": t(xg),
    "params": {n: t(p) for n, p in zip(gnames, pg)},
    "input_grad": t(input_grad(pg, xg)),
    "penalty_sq": float(penalty_sq(pg, xg)),
    "d_penalty_sq": {n: t(g) for n, g in zip(gnames, jax.grad(penalty_sq)(pg, xg))},
    "penalty_gp": float(penalty_gp(pg, xg)),
    "d_penalty_gp": {n: t(g) for n, g in zip(gnames, jax.grad(penalty_gp)(pg, xg))},
}

# ---- op families: vector-Jacobian products on fixed inputs ---------------------
# For each case: inputs, a cotangent `ct` of the output's shape, and the
# gradients of sum(f(inputs) * ct) with respect to every input.


def vjp_case(f, *inputs):
    y, pull = jax.vjp(f, *inputs)
    ct = arr(np.shape(y))
    grads = pull(jnp.asarray(ct))
    return {
        "inputs": [t(a) for a in inputs],
        "ct": t(ct),
        "y": t(y),
        "grads": [t(g) for g in grads],
    }


def sparse_ce(logits, labels):
    ls = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(ls, labels[..., None], axis=-1)[..., 0]


ce_labels = np.array([[2, 0, 1], [1, 1, 3]])
gather_idx = np.array([[3, 0], [3, 1], [2, 2]])
cases = {
    "add_broadcast": vjp_case(lambda a, b: a + b, arr((2, 1, 3)), arr((4, 1))),
    "mul_rank0": vjp_case(lambda a, b: a * b, arr((3, 2)), arr(())),
    "div_broadcast": vjp_case(lambda a, b: a / b, arr((2, 3)), pos((3,))),
    "pow": vjp_case(lambda a, b: a**b, pos((2, 3)), arr((2, 1))),
    "matmul_batched_broadcast": vjp_case(lambda a, b: a @ b, arr((2, 1, 3, 4)), arr((5, 4, 2))),
    "matmul_transposed": vjp_case(lambda a, b: a.T @ b.T, arr((4, 3)), arr((2, 4))),
    "logsumexp_axes": vjp_case(lambda a: logsumexp(a, axis=(0, 2), keepdims=True), arr((2, 3, 4))),
    "var_axis": vjp_case(lambda a: jnp.var(a, axis=1), arr((3, 4, 2))),
    "softmax_axis0": vjp_case(lambda a: jax.nn.softmax(a, axis=0), arr((3, 4))),
    "log_softmax_last": vjp_case(lambda a: jax.nn.log_softmax(a, axis=-1), arr((2, 5))),
    "sparse_softmax_ce": vjp_case(lambda a: sparse_ce(a, ce_labels), arr((2, 3, 4))),
    "softmax_ce": vjp_case(
        lambda a, p: -jnp.sum(p * jax.nn.log_softmax(a, axis=-1), axis=-1),
        arr((3, 4)),
        jax.nn.softmax(jnp.asarray(arr((3, 4))), axis=-1),
    ),
    "gelu_erf_softplus": vjp_case(
        lambda a: jax.nn.gelu(a, approximate=False) + jax.scipy.special.erf(a) * jax.nn.softplus(a),
        arr((2, 3)),
    ),
    "gather": vjp_case(lambda a: jnp.take(a, gather_idx, axis=1), arr((2, 4, 3))),
    "concat_pad_slice": vjp_case(
        lambda a, b: jnp.pad(jnp.concatenate([a, b], axis=1), ((1, 0), (0, 2)))[:, 1:5],
        arr((2, 3)),
        arr((2, 2)),
    ),
}
out["vjp"] = cases
out["vjp_meta"] = {"sparse_softmax_ce_labels": ce_labels.reshape(-1).tolist(),
                   "gather_indices": gather_idx.reshape(-1).tolist(),
                   "gather_index_shape": list(gather_idx.shape)}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tape_fixtures.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", path)
