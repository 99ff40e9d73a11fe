"""Keras 3 (TensorFlow backend) reference values for tests/parity.rs.

Run from the repository root with a Python that has keras 3 and tensorflow
(a venv outside the repository):

    /tmp/peers/bin/python tests/reference/gen_parity_fixtures.py

It writes tests/reference/parity_fixtures.json, which is committed: the Rust
tests never need Python. Every input is written out explicitly (flat row-major
`data` plus `shape`), so the Rust side rebuilds exactly the same problem.

Sections of the fixture:

- `op_grads`: forward value and gradients of each op family on fixed inputs,
  via tf.GradientTape in float64. The target is `sum(f(inputs) * w)` for a
  fixed random `w` of the output's shape, so every output element carries a
  distinct weight. Inputs are chosen away from kinks and ties (|x| > 0.1 for
  abs/relu, no equal elements for max/min/maximum, positive bases for pow), so
  the reference is the mathematical derivative and not a convention; a few
  explicit cases then pin the conventions TensorFlow, PyTorch and JAX share
  (relu'(0) = |x|'(0) = 0, d(0^y)/dy = 0, tied maxima share the gradient), and
  large inputs check the stable forms of softmax, logsumexp, sigmoid, softplus.
- `second_order`: nested tapes in float64: `d/dx sum(w2 * d/dx sum(w1 *
  f(x)))` for a few functions (and one third derivative), a Hessian-vector
  product of a small MLP's MSE loss, and the gradient of a WGAN-GP style
  gradient penalty with respect to the weights.
- `losses`: each Keras loss class (value and gradient with respect to y_pred)
  in float64, with and without `from_logits`, label smoothing, reductions, a
  sample weight, clipped probabilities and extreme logits.
- `losses_after_activation`: the probability cross entropies applied to the
  output of Keras' own softmax/sigmoid, where Keras silently uses the logits
  (see activation_loss_cases).
- `trajectories`: 20 steps of a fixed 6-8-3 ReLU MLP (glorot-uniform kernels,
  small random biases, written into the fixture) on a fixed batch, in float32
  like Keras' default, for SGD (plain, momentum, Nesterov), RMSprop (plain,
  centered, momentum, both), Adam, AdamW (also with
  `exclude_from_weight_decay`), AMSGrad, gradient clipping (clipnorm,
  clipvalue, global_clipnorm), base-optimizer weight decay, and learning-rate
  schedules (ExponentialDecay, CosineDecay with and without warmup,
  PiecewiseConstantDecay) driving SGD, and a cosine-decayed AdamW. Per run: the loss before each
  step, the learning rate each step used, and the final weights.

  Most runs also exist with a frozen row block: rows `0..frozen_rows` of the
  first kernel do not train. Keras has no element masks, so the Keras side is
  made exact in two parts: (1) the kernel's gradient is multiplied by the 0/1
  mask before `apply_gradients`, so neither the rule, the optimizer state
  (momentum, moments) nor the gradient-norm clipping sees the frozen elements;
  (2) the kernel gets a constraint `where(mask, w, w0)` that puts the frozen
  values back after every update, which undoes the one thing gradient masking
  does not stop: decoupled weight decay (AdamW, `weight_decay=`) shrinking the
  frozen rows. The frozen rows are therefore exactly the initial ones, and the
  trainable elements follow Keras' formulas. On the rime side the same run is
  a `TrainableMask::freeze_rows([0..frozen_rows])` on the kernel and nothing
  else.

  Each trajectory is also run in float64 (same Keras code) and the largest
  relative float32-vs-float64 deviation is stored as `f64_deviation`: a run
  whose own float32 rounding moves it by more than ~1e-6 relative could not be
  compared at 1e-5 across implementations and is kept short enough (steps and
  learning rates below) that this does not happen; the script asserts it.
- `optimizer_steps`: each optimizer applied for 6 steps to two bare float32
  variables with an explicit gradient sequence. Without a forward pass the
  only differences are in the update formulas' own rounding, so rime compares
  these at 1e-6 (most agree bit for bit).

Two TensorFlow float64 quirks are avoided on purpose (they are reference
artifacts, not Keras semantics): tf.nn.leaky_relu takes `alpha` as a float32
attribute (0.2 becomes 0.20000000298, so the case uses 0.25), and
tf.nn.gelu(approximate=False) in float64 is only ~5e-9 accurate, so the exact
GELU is built from tf.math.erf.
"""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

assert keras.backend.backend() == "tensorflow"
rng = np.random.default_rng(20250611)
F64 = tf.float64


def arr(a, dtype=np.float64):
    a = np.asarray(a, dtype=dtype)
    return {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}


def randn(*shape):
    return rng.standard_normal(shape)


def away_from_zero(*shape, lo=0.2):
    """Normal samples pushed at least `lo` away from 0."""
    x = randn(*shape)
    return np.where(x >= 0, x + lo, x - lo)


def positive(*shape, lo=0.5, hi=2.0):
    return rng.uniform(lo, hi, shape)


# --------------------------------------------------------------- op gradients


def exact_gelu(x):
    """Keras' exact GELU, `x (1 + erf(x / sqrt 2)) / 2`. Built from tf.math.erf:
    tf.nn.gelu(approximate=False) in float64 is off by up to ~5e-9 relative
    (checked against math.erf), too coarse for a 1e-10 reference."""
    return 0.5 * x * (1.0 + tf.math.erf(x * np.sqrt(0.5)))


def op_case(name, fn, inputs, args=None, note=None):
    """`value = fn(**inputs)`; gradients of sum(value * w) w.r.t. each input."""
    tensors = {k: tf.constant(np.asarray(v, np.float64)) for k, v in inputs.items()}
    with tf.GradientTape(persistent=True) as tape:
        for t in tensors.values():
            tape.watch(t)
        value = fn(**tensors)
        w = tf.constant(randn(*value.shape))
        target = tf.reduce_sum(value * w)
    grads = {}
    for k, t in tensors.items():
        g = tape.gradient(target, t, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads[k] = arr(tf.convert_to_tensor(g).numpy())
    case = {
        "name": name,
        "args": args or {},
        "inputs": {k: arr(v) for k, v in inputs.items()},
        "w": arr(w.numpy()),
        "value": arr(value.numpy()),
        "grads": grads,
    }
    if note:
        case["note"] = note
    return case


def op_cases():
    out = []
    add = out.append

    # elementwise binary ops with NumPy broadcasting
    add(op_case("add", lambda x, y: x + y, {"x": randn(2, 3), "y": randn(3)}))
    add(op_case("sub", lambda x, y: x - y, {"x": randn(2, 1, 3), "y": randn(4, 1)}))
    add(op_case("mul", lambda x, y: x * y, {"x": randn(2, 3), "y": randn(2, 1)}))
    add(op_case("div", lambda x, y: x / y, {"x": randn(3, 1), "y": away_from_zero(1, 4, lo=0.5)}))
    add(op_case("pow", lambda x, y: tf.pow(x, y), {"x": positive(2, 3), "y": randn(3)}))
    # maximum/minimum without ties
    mx, my = randn(2, 3), randn(3)
    add(op_case("maximum", lambda x, y: tf.maximum(x, y), {"x": mx, "y": my}))
    add(op_case("minimum", lambda x, y: tf.minimum(x, y), {"x": randn(3, 1), "y": randn(1, 4)}))
    add(op_case("square_diff_chain", lambda x, y: tf.square(x - y) * x, {"x": randn(2, 3), "y": randn(2, 3)}))

    # ops with a scalar constant
    add(op_case("add_scalar", lambda x: x + 1.5, {"x": randn(2, 3)}, {"s": 1.5}))
    add(op_case("mul_scalar", lambda x: x * -2.5, {"x": randn(2, 3)}, {"s": -2.5}))
    add(op_case("rsub_scalar", lambda x: 3.0 - x, {"x": randn(2, 3)}, {"s": 3.0}))
    add(op_case("rdiv_scalar", lambda x: 2.0 / x, {"x": away_from_zero(2, 3, lo=0.5)}, {"s": 2.0}))
    add(op_case("powf", lambda x: tf.pow(x, 2.5), {"x": positive(2, 3)}, {"p": 2.5}))
    add(op_case("maximum_scalar", lambda x: tf.maximum(x, 0.3), {"x": away_from_zero(3, 3) + 0.3}, {"s": 0.3}))

    # unary functions
    xs = randn(3, 4)
    nz = away_from_zero(3, 4)
    pos = positive(3, 4)
    unary = [
        ("neg", tf.negative, xs),
        ("abs", tf.abs, nz),
        ("exp", tf.exp, xs),
        ("ln", tf.math.log, pos),
        ("sqrt", tf.sqrt, pos),
        ("square", tf.square, xs),
        ("recip", tf.math.reciprocal, nz),
        ("sin", tf.sin, xs),
        ("cos", tf.cos, xs),
        ("tanh", tf.tanh, xs),
        ("sigmoid", tf.sigmoid, xs * 2.0),
        ("relu", tf.nn.relu, nz),
        ("gelu", exact_gelu, xs),
        ("erf", tf.math.erf, xs),
        ("softplus", tf.nn.softplus, xs * 3.0),
        ("sign", tf.sign, nz),
    ]
    for name, fn, x in unary:
        add(op_case(name, lambda x, fn=fn: fn(x), {"x": x}))
    # TF's LeakyRelu takes alpha as a float32 attribute, so alpha=0.2 would
    # mean 0.20000000298 even in float64; 0.25 is exact in both
    add(op_case("leaky_relu", lambda x: tf.nn.leaky_relu(x, alpha=0.25), {"x": nz}, {"alpha": 0.25}))
    # clip: no element on a boundary
    cx = np.array([[-2.0, -0.7, 0.3, 0.9], [1.6, -0.2, 0.05, -1.3]])
    add(op_case("clamp", lambda x: tf.clip_by_value(x, -1.0, 1.0), {"x": cx}, {"min": -1.0, "max": 1.0}))

    # reductions with axes
    x3 = randn(2, 3, 4)
    red = [
        ("sum", tf.reduce_sum),
        ("mean", tf.reduce_mean),
        ("max", tf.reduce_max),
        ("min", tf.reduce_min),
        ("var", tf.math.reduce_variance),
        ("logsumexp", tf.reduce_logsumexp),
    ]
    for name, fn in red:
        for axes, keep in [([1], False), ([0, 2], True), ([-1], False)]:
            add(
                op_case(
                    f"{name}_axes{''.join(str(a) for a in axes)}_keep{int(keep)}",
                    lambda x, fn=fn, axes=axes, keep=keep: fn(x, axis=axes, keepdims=keep),
                    {"x": x3},
                    {"reduce": name, "axes": axes, "keep_dims": keep},
                )
            )
    add(op_case("sum_all", lambda x: tf.reduce_sum(x), {"x": x3}, {"reduce": "sum", "axes": [], "keep_dims": False}))
    add(op_case("mean_all", lambda x: tf.reduce_mean(x), {"x": x3}, {"reduce": "mean", "axes": [], "keep_dims": False}))

    # softmax family
    lx = randn(3, 4) * 2.0
    add(op_case("softmax_last", lambda x: tf.nn.softmax(x, axis=-1), {"x": lx}, {"axis": -1}))
    add(op_case("softmax_axis0", lambda x: tf.nn.softmax(x, axis=0), {"x": lx}, {"axis": 0}))
    add(op_case("log_softmax_last", lambda x: tf.nn.log_softmax(x, axis=-1), {"x": lx}, {"axis": -1}))
    add(op_case("log_softmax_axis1_3d", lambda x: tf.nn.log_softmax(x, axis=1), {"x": x3}, {"axis": 1}))
    labels = rng.dirichlet(np.ones(4), size=3)
    add(
        op_case(
            "softmax_cross_entropy",
            lambda x, labels: tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=x),
            {"x": lx, "labels": labels},
        )
    )
    sparse = [2, 0, 3]
    add(
        op_case(
            "sparse_softmax_cross_entropy",
            lambda x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=sparse, logits=x),
            {"x": lx},
            {"labels": sparse},
        )
    )

    # matmul: plain, transposed, batched, broadcast batch
    for ta, tb in [(False, False), (True, False), (False, True), (True, True)]:
        a = randn(4, 3) if ta else randn(3, 4)
        b = randn(2, 4) if tb else randn(4, 2)
        add(
            op_case(
                f"matmul_ta{int(ta)}_tb{int(tb)}",
                lambda a, b, ta=ta, tb=tb: tf.matmul(a, b, transpose_a=ta, transpose_b=tb),
                {"a": a, "b": b},
                {"transpose_a": ta, "transpose_b": tb},
            )
        )
    add(op_case("matmul_batched", lambda a, b: tf.matmul(a, b), {"a": randn(2, 3, 4), "b": randn(2, 4, 5)},
                {"transpose_a": False, "transpose_b": False}))
    add(op_case("matmul_batched_tb", lambda a, b: tf.matmul(a, b, transpose_b=True),
                {"a": randn(2, 3, 4), "b": randn(2, 5, 4)}, {"transpose_a": False, "transpose_b": True}))
    add(op_case("matmul_broadcast_batch", lambda a, b: tf.matmul(a, b), {"a": randn(2, 3, 4), "b": randn(4, 2)},
                {"transpose_a": False, "transpose_b": False}))
    add(op_case("matmul_broadcast_batch_lhs", lambda a, b: tf.matmul(a, b),
                {"a": randn(1, 3, 4), "b": randn(3, 4, 2)}, {"transpose_a": False, "transpose_b": False}))

    # layout
    add(op_case("concat_axis1", lambda a, b, c: tf.concat([a, b, c], axis=1),
                {"a": randn(2, 1, 3), "b": randn(2, 2, 3), "c": randn(2, 3, 3)}, {"axis": 1}))
    add(op_case("concat_axis_last", lambda a, b: tf.concat([a, b], axis=-1),
                {"a": randn(3, 2), "b": randn(3, 4)}, {"axis": -1}))
    add(op_case("stack_axis1", lambda a, b: tf.stack([a, b], axis=1), {"a": randn(2, 3), "b": randn(2, 3)}, {"axis": 1}))
    add(op_case("slice", lambda x: x[1:3, :, 1:4], {"x": randn(4, 2, 5)}, {"ranges": [[1, 3], [0, 2], [1, 4]]}))
    add(op_case("narrow", lambda x: x[:, 2:5], {"x": randn(3, 6)}, {"axis": 1, "start": 2, "len": 3}))
    add(op_case("split_second", lambda x: tf.split(x, [1, 3, 2], axis=1)[1], {"x": randn(2, 6)},
                {"sizes": [1, 3, 2], "axis": 1, "pick": 1}))
    add(op_case("reshape", lambda x: tf.reshape(x, [3, 8]), {"x": x3}, {"shape": [3, 8]}))
    add(op_case("permute", lambda x: tf.transpose(x, [2, 0, 1]), {"x": x3}, {"perm": [2, 0, 1]}))
    add(op_case("transpose_2d", lambda x: tf.transpose(x), {"x": randn(3, 5)}))
    add(op_case("broadcast_to", lambda x: tf.broadcast_to(x, [2, 3, 4]), {"x": randn(3, 1)}, {"shape": [2, 3, 4]}))
    add(op_case("unsqueeze_squeeze", lambda x: tf.squeeze(tf.expand_dims(x, 1) * 2.0, axis=[1]), {"x": randn(3, 2)}))
    add(op_case("pad", lambda x: tf.pad(x, [[1, 0], [2, 1]]), {"x": randn(2, 3)}, {"widths": [[1, 0], [2, 1]]}))

    # indexing: gather (embedding-style) and index_select (repeats accumulate)
    gi = [[2, 0], [2, 3]]
    add(op_case("gather_axis0", lambda x: tf.gather(x, gi, axis=0), {"x": randn(4, 3)},
                {"axis": 0, "indices": [2, 0, 2, 3], "index_shape": [2, 2]}))
    si = [3, 0, 3, 1, 3]
    add(op_case("index_select_axis1", lambda x: tf.gather(x, si, axis=1), {"x": randn(2, 4, 2)},
                {"axis": 1, "indices": si}))

    # conventions at kinks and ties, the same in TensorFlow, PyTorch and JAX:
    # relu'(0) = 0, |x|'(0) = 0, d(0^y)/dy = 0 (0^y is 0 for every y > 0), and
    # tf.reduce_max splits the gradient equally among tied maxima
    rz = np.array([[0.0, 1.5, -0.7], [0.0, -0.0, 2.0]])
    add(op_case("relu_at_zero", lambda x: tf.nn.relu(x), {"x": rz}))
    add(op_case("abs_at_zero", lambda x: tf.abs(x), {"x": rz}))
    add(op_case("pow_zero_base", lambda x, y: tf.pow(x, y), {"x": np.array([[0.0, 1.3, 0.0], [0.7, 0.0, 2.0]]),
                                                             "y": np.array([2.0, 3.0, 1.5])}))
    ties = np.array([[1.0, 3.0, 3.0, -2.0], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, 0.0, 1.0]])
    add(op_case("max_with_ties", lambda x: tf.reduce_max(x, axis=1), {"x": ties},
                {"reduce": "max", "axes": [1], "keep_dims": False}))
    add(op_case("min_with_ties", lambda x: tf.reduce_min(x, axis=0), {"x": -ties},
                {"reduce": "min", "axes": [0], "keep_dims": False}))
    # numerically stable forms on large inputs
    big = np.array([[1000.0, 999.0, -1000.0], [-800.0, -805.0, -790.0]])
    add(op_case("softmax_large", lambda x: tf.nn.softmax(x, axis=-1), {"x": big}, {"axis": -1}))
    add(op_case("log_softmax_large", lambda x: tf.nn.log_softmax(x, axis=-1), {"x": big}, {"axis": -1}))
    add(op_case("logsumexp_large", lambda x: tf.reduce_logsumexp(x, axis=[1]), {"x": big},
                {"reduce": "logsumexp", "axes": [1], "keep_dims": False}))
    add(op_case("sigmoid_large", lambda x: tf.sigmoid(x), {"x": np.array([[-745.0, -40.0, 40.0, 800.0]])}))
    add(op_case("softplus_large", lambda x: tf.nn.softplus(x), {"x": np.array([[-800.0, -40.0, 40.0, 800.0]])}))

    # where/select with broadcasting
    cond = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    add(op_case("select", lambda a, b: tf.where(cond > 0.5, a, b), {"a": randn(2, 3), "b": randn(3)},
                {"cond": arr(cond)}))
    return out


# -------------------------------------------------------- second derivatives


def nested(fn, x, w1, w2):
    """g = d/dx sum(w1 * fn(x)); h = d/dx sum(w2 * g)."""
    x = tf.constant(x)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = fn(x)
            target = tf.reduce_sum(y * w1)
        g = inner.gradient(target, x)
        target2 = tf.reduce_sum(g * w2)
    h = outer.gradient(target2, x)
    return y.numpy(), g.numpy(), h.numpy()


def second_order_cases():
    a_mat = randn(4, 3)
    fns = [
        ("tanh", tf.tanh, randn(2, 4)),
        ("sigmoid", tf.sigmoid, randn(2, 4)),
        ("softplus", tf.nn.softplus, randn(2, 4)),
        ("sin_exp", lambda x: tf.sin(x) * tf.exp(x), randn(2, 4)),
        ("cube", lambda x: x * x * x, randn(2, 4)),
        ("recip_1px2", lambda x: 1.0 / (1.0 + tf.square(x)), randn(2, 4)),
        ("gelu", exact_gelu, randn(2, 4)),
        ("sqrt", tf.sqrt, positive(2, 4)),
        ("softmax", lambda x: tf.nn.softmax(x, axis=-1), randn(2, 4)),
        ("log_softmax", lambda x: tf.nn.log_softmax(x, axis=-1), randn(2, 4)),
        ("logsumexp", lambda x: tf.reduce_logsumexp(x, axis=-1), randn(2, 4)),
        ("tanh_matmul", lambda x: tf.tanh(tf.matmul(x, tf.constant(a_mat))), randn(2, 4)),
        ("div_self", lambda x: x / (1.0 + tf.exp(-x)), randn(2, 4)),
    ]
    elementwise = []
    for name, fn, x in fns:
        y_shape = fn(tf.constant(x)).shape
        w1, w2 = randn(*y_shape), randn(*x.shape)
        y, g, h = nested(fn, x, w1, w2)
        case = {"name": name, "x": arr(x), "w1": arr(w1), "w2": arr(w2), "y": arr(y), "grad": arr(g), "grad2": arr(h)}
        if name == "tanh_matmul":
            case["a"] = arr(a_mat)
        elementwise.append(case)

    # third derivative of tanh: three nested tapes, unit seeds
    x = randn(5)
    xt = tf.constant(x)
    with tf.GradientTape() as t3:
        t3.watch(xt)
        with tf.GradientTape() as t2:
            t2.watch(xt)
            with tf.GradientTape() as t1:
                t1.watch(xt)
                y = tf.reduce_sum(tf.tanh(xt))
            d1 = t1.gradient(y, xt)
            s1 = tf.reduce_sum(d1)
        d2 = t2.gradient(s1, xt)
        s2 = tf.reduce_sum(d2)
    d3 = t3.gradient(s2, xt)
    third = {"x": arr(x), "d1": arr(d1.numpy()), "d2": arr(d2.numpy()), "d3": arr(d3.numpy())}

    # Hessian-vector product of an MLP's MSE loss
    x = randn(5, 3)
    y = randn(5, 2)
    params = {"w1": randn(3, 4) * 0.7, "b1": randn(4) * 0.1, "w2": randn(4, 2) * 0.7, "b2": randn(2) * 0.1}
    vs = {k: randn(*v.shape) for k, v in params.items()}
    names = list(params)
    p = [tf.Variable(params[k]) for k in names]
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            h = tf.tanh(tf.matmul(x, p[0]) + p[1])
            pred = tf.matmul(h, p[2]) + p[3]
            loss = tf.reduce_mean(tf.square(pred - y))
        grads = inner.gradient(loss, p)
        gv = tf.add_n([tf.reduce_sum(g * vs[k]) for g, k in zip(grads, names)])
    hvp = outer.gradient(gv, p)
    mlp_hvp = {
        "x": arr(x),
        "y": arr(y),
        "params": {k: arr(v) for k, v in params.items()},
        "v": {k: arr(v) for k, v in vs.items()},
        "loss": float(loss.numpy()),
        "grads": {k: arr(g.numpy()) for k, g in zip(names, grads)},
        "hvp": {k: arr(g.numpy()) for k, g in zip(names, hvp)},
    }

    # gradient penalty: loss = mean(D(x)) + lam * mean((||dD/dx|| - 1)^2)
    x = randn(6, 3)
    params = {"w1": randn(3, 5) * 0.8, "b1": randn(5) * 0.1, "w2": randn(5, 1) * 0.8, "b2": randn(1) * 0.1}
    names = list(params)
    p = [tf.Variable(params[k]) for k in names]
    lam = 10.0
    xt = tf.constant(x)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            inner.watch(xt)
            d = tf.matmul(tf.nn.softplus(tf.matmul(xt, p[0]) + p[1]), p[2]) + p[3]
            d_sum = tf.reduce_sum(d)
        gx = inner.gradient(d_sum, xt)
        norm = tf.sqrt(tf.reduce_sum(tf.square(gx), axis=1))
        gp = tf.reduce_mean(tf.square(norm - 1.0))
        loss = tf.reduce_mean(d) + lam * gp
    gw = outer.gradient(loss, p)
    grad_penalty = {
        "x": arr(x),
        "lambda": lam,
        "params": {k: arr(v) for k, v in params.items()},
        "grad_x": arr(gx.numpy()),
        "gp": float(gp.numpy()),
        "loss": float(loss.numpy()),
        "grads": {k: arr(g.numpy()) for k, g in zip(names, gw)},
    }
    return {"nested": elementwise, "third_tanh": third, "mlp_hvp": mlp_hvp, "grad_penalty": grad_penalty}


# -------------------------------------------------------------------- losses


def loss_case(name, cls, config, y_true, y_pred, sample_weight=None):
    loss_fn = getattr(keras.losses, cls)(dtype="float64", **config)
    yp = tf.Variable(np.asarray(y_pred, np.float64))
    yt = tf.constant(np.asarray(y_true, np.float64))
    with tf.GradientTape() as tape:
        sw = None if sample_weight is None else tf.constant(np.asarray(sample_weight, np.float64))
        value = loss_fn(yt, yp, sample_weight=sw)
        target = tf.reduce_sum(value)
    (g,) = tape.gradient(target, [yp])
    assert value.dtype == tf.float64, (name, value.dtype)
    case = {
        "name": name,
        "class": cls,
        "config": config,
        "y_true": arr(y_true),
        "y_pred": arr(y_pred),
        "value": arr(value.numpy()),
        "grad": arr(g.numpy()),
    }
    if sample_weight is not None:
        case["sample_weight"] = arr(sample_weight)
    return case


def loss_cases():
    out = []
    yt, yp = randn(4, 3), randn(4, 3)
    out.append(loss_case("mse", "MeanSquaredError", {}, yt, yp))
    out.append(loss_case("mse_sum", "MeanSquaredError", {"reduction": "sum"}, yt, yp))
    out.append(loss_case("mse_none", "MeanSquaredError", {"reduction": None}, yt, yp))
    out.append(loss_case("mse_sample_weight", "MeanSquaredError", {}, yt, yp, sample_weight=positive(4)))
    out.append(loss_case("mse_true_trailing_1", "MeanSquaredError", {}, randn(5, 1), randn(5)))
    # no element with y_pred == y_true (|.| has a kink there)
    out.append(loss_case("mae", "MeanAbsoluteError", {}, yt, yt + away_from_zero(4, 3, lo=0.1)))
    mae_p = yt + away_from_zero(4, 3, lo=0.1)
    mae_p[1, 2], mae_p[3, 0] = yt[1, 2], yt[3, 0]  # zero error: |.|'(0) = 0
    out.append(loss_case("mae_zero_error", "MeanAbsoluteError", {}, yt, mae_p))
    # errors on both sides of delta, none on it
    err = np.array([[0.3, -1.7, 0.9], [-0.4, 2.5, -0.05], [1.2, -0.8, 3.1], [-2.2, 0.6, 0.1]])
    out.append(loss_case("huber", "Huber", {}, yt, yt + err))
    out.append(loss_case("huber_delta0.5", "Huber", {"delta": 0.5}, yt, yt + err))

    out.append(loss_case("mse_rank3", "MeanSquaredError", {}, randn(2, 3, 4), randn(2, 3, 4)))

    # binary cross entropy: probabilities and logits
    bt = rng.integers(0, 2, (4, 3)).astype(np.float64)
    bt[0, 0], bt[1, 1] = 1.0, 0.0
    bp = rng.uniform(0.05, 0.95, (4, 3))
    # probabilities outside [1e-7, 1 - 1e-7] are clipped (zero gradient there)
    bp_clipped = bp.copy()
    bp_clipped[0, 0], bp_clipped[0, 1], bp_clipped[1, 1], bp_clipped[2, 2] = 0.0, 1.0, 1e-9, 1.0
    bl = randn(4, 3) * 2.0
    out.append(loss_case("bce", "BinaryCrossentropy", {}, bt, bp))
    out.append(loss_case("bce_logits", "BinaryCrossentropy", {"from_logits": True}, bt, bl))
    out.append(loss_case("bce_smooth", "BinaryCrossentropy", {"label_smoothing": 0.1}, bt, bp))
    out.append(loss_case("bce_logits_smooth", "BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.2}, bt, bl))
    out.append(loss_case("bce_soft_labels", "BinaryCrossentropy", {}, rng.uniform(0, 1, (4, 3)), bp))
    out.append(loss_case("bce_clipped", "BinaryCrossentropy", {}, bt, bp_clipped))
    out.append(loss_case("bce_logits_rank3", "BinaryCrossentropy", {"from_logits": True},
                         rng.integers(0, 2, (2, 2, 3)).astype(np.float64), randn(2, 2, 3) * 3.0))
    out.append(loss_case("bce_logits_none", "BinaryCrossentropy", {"from_logits": True, "reduction": None}, bt, bl))
    extreme = np.array([[60.0, -60.0, 800.0], [-800.0, 35.0, -0.5]])
    out.append(loss_case("bce_logits_extreme", "BinaryCrossentropy", {"from_logits": True},
                         np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), extreme))

    # categorical cross entropy: one-hot labels; unnormalized probabilities
    # (Keras renormalizes them), logits
    labels = np.array([2, 0, 1, 2])
    ct = np.eye(3)[labels]
    cp = rng.uniform(0.1, 1.0, (4, 3))
    cl = randn(4, 3) * 2.0
    out.append(loss_case("cce", "CategoricalCrossentropy", {}, ct, cp))
    out.append(loss_case("cce_logits", "CategoricalCrossentropy", {"from_logits": True}, ct, cl))
    out.append(loss_case("cce_smooth", "CategoricalCrossentropy", {"label_smoothing": 0.2}, ct, cp))
    cp_zero = cp.copy()
    cp_zero[1, 0], cp_zero[3, 1] = 0.0, 0.0  # renormalized, then clipped to 1e-7
    out.append(loss_case("cce_zero_probability", "CategoricalCrossentropy", {}, ct, cp_zero))
    out.append(loss_case("cce_logits_smooth", "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, ct, cl))
    out.append(loss_case("cce_soft_labels_logits", "CategoricalCrossentropy", {"from_logits": True},
                         rng.dirichlet(np.ones(3), size=4), cl))
    out.append(loss_case("cce_logits_sum", "CategoricalCrossentropy", {"from_logits": True, "reduction": "sum"}, ct, cl))
    out.append(loss_case("cce_logits_extreme", "CategoricalCrossentropy", {"from_logits": True}, ct[:2],
                         np.array([[900.0, -900.0, 0.0], [-50.0, 60.0, 55.0]])))

    # sparse categorical cross entropy: probabilities (softmax rows) and logits
    sp = tf.nn.softmax(tf.constant(cl)).numpy()
    out.append(loss_case("scce", "SparseCategoricalCrossentropy", {}, labels.astype(np.float64), sp))
    sp_zero = sp.copy()
    sp_zero[0, 1], sp_zero[2, 1] = 0.0, 0.0  # the label's own probability is 0 in row 2
    out.append(loss_case("scce_zero_probability", "SparseCategoricalCrossentropy", {}, labels.astype(np.float64),
                         sp_zero))
    out.append(loss_case("scce_logits", "SparseCategoricalCrossentropy", {"from_logits": True},
                         labels.astype(np.float64), cl))
    out.append(loss_case("scce_logits_trailing_1", "SparseCategoricalCrossentropy", {"from_logits": True},
                         labels.reshape(4, 1).astype(np.float64), cl))
    out.append(loss_case("scce_logits_sample_weight", "SparseCategoricalCrossentropy", {"from_logits": True},
                         labels.astype(np.float64), cl, sample_weight=positive(4)))
    out.append(loss_case("scce_logits_extreme", "SparseCategoricalCrossentropy", {"from_logits": True},
                         np.array([0.0, 2.0]), np.array([[900.0, -900.0, 0.0], [-50.0, 60.0, 55.0]])))
    return out


def activation_loss_cases():
    """Keras' probability losses on the output of its own softmax/sigmoid.

    keras.activations.softmax and sigmoid (and keras.ops.softmax/sigmoid on
    the TF backend) tag their output with `_keras_logits`; the cross entropies
    then ignore `from_logits=False` and compute from the tagged logits, with no
    [1e-7, 1 - 1e-7] clipping. So `Dense(n, activation="softmax")` followed by
    `CategoricalCrossentropy()` is the fused logits loss in Keras: saturated
    predictions keep a gradient. The gradient here is with respect to the
    logits."""
    out = []
    logits = np.array([[30.0, -10.0, 2.0], [0.5, -0.2, 0.1], [-25.0, 1.0, 20.0]])
    onehot = np.eye(3)[[1, 0, 0]]
    for name, cls, act, y in [
        ("cce_after_softmax", "CategoricalCrossentropy", keras.activations.softmax, onehot),
        ("scce_after_softmax", "SparseCategoricalCrossentropy", keras.activations.softmax, np.array([1.0, 0.0, 0.0])),
        ("bce_after_sigmoid", "BinaryCrossentropy", keras.activations.sigmoid, onehot),
    ]:
        x = tf.Variable(logits)
        loss_fn = getattr(keras.losses, cls)(dtype="float64")
        with tf.GradientTape() as tape:
            value = loss_fn(tf.constant(y), act(x))
        (g,) = tape.gradient(value, [x])
        out.append({"name": name, "class": cls, "activation": act.__name__, "y_true": arr(y), "logits": arr(logits),
                    "value": float(value.numpy()), "grad_logits": arr(g.numpy())})
    return out


# -------------------------------------------------------------- trajectories

STEPS = 20
N_IN, N_HID, N_OUT, BATCH = 6, 8, 3, 16


def glorot(fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out))


MLP_X = randn(BATCH, N_IN).astype(np.float32)
MLP_LABELS = rng.integers(0, N_OUT, BATCH).astype(np.float32)
MLP_Y = randn(BATCH, N_OUT).astype(np.float32)
MLP_INIT = [
    glorot(N_IN, N_HID).astype(np.float32),
    (randn(N_HID) * 0.1).astype(np.float32),
    glorot(N_HID, N_OUT).astype(np.float32),
    (randn(N_OUT) * 0.1).astype(np.float32),
]


class RestoreFrozen(keras.constraints.Constraint):
    """Puts the frozen elements of a kernel back to their initial values."""

    def __init__(self, trainable, initial):
        self.trainable = trainable
        self.initial = initial

    def __call__(self, w):
        return keras.ops.where(self.trainable, w, keras.ops.cast(self.initial, w.dtype))


def make_schedule(spec):
    kind = spec["schedule"]
    s = keras.optimizers.schedules
    if kind == "ExponentialDecay":
        return s.ExponentialDecay(spec["initial_learning_rate"], spec["decay_steps"], spec["decay_rate"],
                                  staircase=spec.get("staircase", False))
    if kind == "CosineDecay":
        return s.CosineDecay(spec["initial_learning_rate"], spec["decay_steps"], alpha=spec.get("alpha", 0.0),
                             warmup_target=spec.get("warmup_target"), warmup_steps=spec.get("warmup_steps", 0))
    if kind == "PiecewiseConstantDecay":
        return s.PiecewiseConstantDecay(spec["boundaries"], spec["values"])
    raise ValueError(kind)


def make_optimizer(spec):
    spec = dict(spec)
    cls = spec.pop("class")
    lr = spec.pop("learning_rate")
    exclude = spec.pop("exclude_from_weight_decay", None)
    if isinstance(lr, dict):
        lr = make_schedule(lr)
    opt = getattr(keras.optimizers, cls)(learning_rate=lr, **spec)
    if exclude:
        opt.exclude_from_weight_decay(var_names=exclude)
    return opt


def run(spec, loss, frozen_rows, dtype):
    np_dtype = np.float32 if dtype == "float32" else np.float64
    init = [w.astype(np_dtype) for w in MLP_INIT]
    constraint, grad_mask = None, None
    if frozen_rows:
        trainable = np.ones((N_IN, N_HID), dtype=bool)
        trainable[:frozen_rows] = False
        constraint = RestoreFrozen(tf.constant(trainable), tf.constant(init[0]))
        grad_mask = tf.constant(trainable.astype(np_dtype))
    model = keras.Sequential(
        [
            keras.Input((N_IN,), dtype=dtype),
            keras.layers.Dense(N_HID, activation="relu", kernel_constraint=constraint, dtype=dtype),
            keras.layers.Dense(N_OUT, dtype=dtype),
        ]
    )
    model.set_weights(init)
    if loss == "sparse_categorical_crossentropy_logits":
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
        y = tf.constant(MLP_LABELS.astype(np_dtype))
    else:
        loss_fn = keras.losses.MeanSquaredError(dtype=dtype)
        y = tf.constant(MLP_Y.astype(np_dtype))
    x = tf.constant(MLP_X.astype(np_dtype))
    opt = make_optimizer(spec)
    variables = model.trainable_weights
    assert [v.path.split("/")[-1] for v in variables] == ["kernel", "bias", "kernel", "bias"]
    losses, lrs = [], []
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            value = loss_fn(y, out)
        assert value.dtype == dtype, value.dtype
        grads = tape.gradient(value, variables)
        if grad_mask is not None:
            grads[0] = grads[0] * grad_mask
        lrs.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))
        opt.apply_gradients(zip(grads, variables))
        losses.append(float(value.numpy()))
    final = [v.numpy() for v in variables]
    if frozen_rows:
        assert np.array_equal(final[0][:frozen_rows], init[0][:frozen_rows])
    return losses, lrs, final


def trajectory(name, spec, loss="sparse_categorical_crossentropy_logits", frozen_rows=0):
    losses, lrs, final = run(spec, loss, frozen_rows, "float32")
    losses64, _, final64 = run(spec, loss, frozen_rows, "float64")
    dev = max(
        max(abs(a - b) / max(abs(b), 1.0) for a, b in zip(losses, losses64)),
        max(float(np.max(np.abs(w - w64) / np.maximum(np.abs(w64), 1.0))) for w, w64 in zip(final, final64)),
    )
    # float32 rounding alone must stay well inside the 1e-5 comparison
    assert dev < 2e-6, (name, dev)
    return {
        "name": name,
        "optimizer": spec,
        "loss": loss,
        "frozen_rows": frozen_rows,
        "losses": losses,
        "learning_rates": lrs,
        "final_weights": [arr(w, np.float32) for w in final],
        "f64_deviation": dev,
    }


def trajectory_cases():
    base = [
        ("sgd", {"class": "SGD", "learning_rate": 0.1}),
        ("sgd_momentum", {"class": "SGD", "learning_rate": 0.05, "momentum": 0.9}),
        ("sgd_nesterov", {"class": "SGD", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
        ("rmsprop", {"class": "RMSprop", "learning_rate": 0.005}),
        ("rmsprop_centered", {"class": "RMSprop", "learning_rate": 0.005, "centered": True}),
        ("rmsprop_momentum", {"class": "RMSprop", "learning_rate": 0.002, "momentum": 0.8}),
        ("rmsprop_centered_momentum", {"class": "RMSprop", "learning_rate": 0.002, "rho": 0.8, "momentum": 0.5,
                                       "centered": True}),
        ("adam", {"class": "Adam", "learning_rate": 0.01}),
        ("adamw", {"class": "AdamW", "learning_rate": 0.01, "weight_decay": 0.1}),
        ("adamw_exclude_bias", {"class": "AdamW", "learning_rate": 0.01, "weight_decay": 0.3,
                                "exclude_from_weight_decay": ["bias"]}),
    ]
    extras = [
        ("adam_amsgrad", {"class": "Adam", "learning_rate": 0.01, "beta_2": 0.9, "amsgrad": True}),
        ("sgd_clipnorm", {"class": "SGD", "learning_rate": 0.1, "momentum": 0.5, "clipnorm": 0.1}),
        ("sgd_clipvalue", {"class": "SGD", "learning_rate": 0.1, "clipvalue": 0.02}),
        ("sgd_global_clipnorm", {"class": "SGD", "learning_rate": 0.1, "global_clipnorm": 0.2}),
        ("adam_clipvalue", {"class": "Adam", "learning_rate": 0.01, "clipvalue": 0.05}),
        ("rmsprop_global_clipnorm", {"class": "RMSprop", "learning_rate": 0.005, "global_clipnorm": 0.3}),
        ("sgd_weight_decay", {"class": "SGD", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.05}),
        ("adam_weight_decay", {"class": "Adam", "learning_rate": 0.01, "weight_decay": 0.05}),
        ("sgd_exponential_decay", {"class": "SGD", "learning_rate": {
            "schedule": "ExponentialDecay", "initial_learning_rate": 0.2, "decay_steps": 5, "decay_rate": 0.5}}),
        ("sgd_exponential_decay_staircase", {"class": "SGD", "momentum": 0.5, "learning_rate": {
            "schedule": "ExponentialDecay", "initial_learning_rate": 0.2, "decay_steps": 6, "decay_rate": 0.3,
            "staircase": True}}),
        ("sgd_cosine_decay", {"class": "SGD", "learning_rate": {
            "schedule": "CosineDecay", "initial_learning_rate": 0.2, "decay_steps": 15, "alpha": 0.1}}),
        ("sgd_cosine_decay_warmup", {"class": "SGD", "learning_rate": {
            "schedule": "CosineDecay", "initial_learning_rate": 0.0, "decay_steps": 12, "warmup_target": 0.2,
            "warmup_steps": 5}}),
        ("sgd_piecewise_constant", {"class": "SGD", "momentum": 0.9, "learning_rate": {
            "schedule": "PiecewiseConstantDecay", "boundaries": [4, 11], "values": [0.1, 0.03, 0.01]}}),
        # the decoupled weight decay follows the scheduled rate
        ("adamw_cosine_decay", {"class": "AdamW", "weight_decay": 0.5, "learning_rate": {
            "schedule": "CosineDecay", "initial_learning_rate": 0.02, "decay_steps": 10, "alpha": 0.25}}),
    ]
    out = []
    for name, spec in base:
        out.append(trajectory(name, spec))
        out.append(trajectory(name + "_frozen", spec, frozen_rows=2))
    out.append(trajectory("sgd_mse", {"class": "SGD", "learning_rate": 0.05}, loss="mean_squared_error"))
    out.append(trajectory("adam_mse_frozen", {"class": "Adam", "learning_rate": 0.01}, loss="mean_squared_error",
                          frozen_rows=3))
    for name, spec in extras:
        out.append(trajectory(name, spec))
    out.append(trajectory("adam_amsgrad_frozen", extras[0][1], frozen_rows=2))
    out.append(trajectory("sgd_global_clipnorm_frozen", extras[3][1], frozen_rows=2))
    out.append(trajectory("sgd_weight_decay_frozen", extras[6][1], frozen_rows=2))
    return out


def dump(fixtures):
    """JSON with one line per case, so a regenerated fixture diffs by case."""
    compact = lambda v: json.dumps(v, separators=(",", ":"))  # noqa: E731
    parts = []
    for key, value in fixtures.items():
        if isinstance(value, list):
            body = ",\n  ".join(compact(v) for v in value)
            parts.append(f" {json.dumps(key)}: [\n  {body}\n ]")
        elif isinstance(value, dict):
            body = ",\n  ".join(f"{json.dumps(k)}: {compact(v)}" for k, v in value.items())
            parts.append(f" {json.dumps(key)}: {{\n  {body}\n }}")
        else:
            parts.append(f" {json.dumps(key)}: {compact(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def optimizer_step_cases():
    """Each optimizer on two bare variables with an explicit gradient sequence
    (float32): no matmul, so the only rounding differences between
    implementations are in the update formulas themselves, and the comparison
    can be much tighter than the trajectories'."""
    steps = 6
    w0 = [(randn(3, 4)).astype(np.float32), (randn(4)).astype(np.float32)]
    grads = []
    for k in range(steps):
        g = [(randn(3, 4) * (0.5 + k)).astype(np.float32), (randn(4) * 0.3).astype(np.float32)]
        g[0][0, 0] = 0.0  # a zero gradient element
        grads.append(g)
    specs = [
        ("sgd", {"class": "SGD", "learning_rate": 0.1}),
        ("sgd_momentum", {"class": "SGD", "learning_rate": 0.1, "momentum": 0.9}),
        ("sgd_nesterov", {"class": "SGD", "learning_rate": 0.1, "momentum": 0.7, "nesterov": True}),
        ("rmsprop", {"class": "RMSprop", "learning_rate": 0.1}),
        ("rmsprop_centered_momentum", {"class": "RMSprop", "learning_rate": 0.1, "rho": 0.95, "momentum": 0.5,
                                       "centered": True}),
        ("adam", {"class": "Adam", "learning_rate": 0.5}),
        ("adam_amsgrad", {"class": "Adam", "learning_rate": 0.5, "amsgrad": True}),
        ("adamw", {"class": "AdamW", "learning_rate": 0.5, "weight_decay": 0.2}),
        ("sgd_clipnorm", {"class": "SGD", "learning_rate": 0.1, "clipnorm": 1.0}),
        ("sgd_clipvalue", {"class": "SGD", "learning_rate": 0.1, "clipvalue": 0.5}),
        ("adam_global_clipnorm", {"class": "Adam", "learning_rate": 0.5, "global_clipnorm": 2.0}),
        ("sgd_cosine_decay", {"class": "SGD", "learning_rate": {
            "schedule": "CosineDecay", "initial_learning_rate": 0.3, "decay_steps": 4, "alpha": 0.2}}),
    ]
    out = []
    for name, spec in specs:
        variables = [keras.Variable(w, dtype="float32") for w in w0]
        opt = make_optimizer(spec)
        after = []
        for g in grads:
            opt.apply_gradients(zip([tf.constant(x) for x in g], variables))
            after.append([arr(v.numpy(), np.float32) for v in variables])
        out.append({"name": name, "optimizer": spec, "after": after})
    return {
        "w0": [arr(w, np.float32) for w in w0],
        "grads": [[arr(x, np.float32) for x in g] for g in grads],
        "runs": out,
    }


def main():
    fixtures = {
        "generator": "tests/reference/gen_parity_fixtures.py",
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "op_grads": op_cases(),
        "second_order": second_order_cases(),
        "losses": loss_cases(),
        "losses_after_activation": activation_loss_cases(),
        "mlp": {
            "layers": [N_IN, N_HID, N_OUT],
            "activation": "relu",
            "steps": STEPS,
            "x": arr(MLP_X, np.float32),
            "labels": arr(MLP_LABELS, np.float32),
            "y": arr(MLP_Y, np.float32),
            "init": [arr(w, np.float32) for w in MLP_INIT],
        },
        "trajectories": trajectory_cases(),
        "optimizer_steps": optimizer_step_cases(),
    }
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "parity_fixtures.json"), "w") as f:
        f.write(dump(fixtures))
    for t in fixtures["trajectories"]:
        print(f"{t['name']:36s} loss {t['losses'][0]:.5f} -> {t['losses'][-1]:.5f}  f32/f64 dev {t['f64_deviation']:.1e}")


if __name__ == "__main__":
    main()
