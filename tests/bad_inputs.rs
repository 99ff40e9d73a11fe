//! The bad-input suite (issue 11): table-driven cases across tensors, tapes,
//! masks, layers and models, optimizers, configs and weights files. Each
//! case asserts the typed error AND that every piece of state it could
//! touch is bit-identical afterwards. Two bounded fuzz loops (weights files,
//! layer and model configs) check that mutated inputs give `Ok` or a typed
//! error, never a panic.
//!
//! `.ci/run` also runs this binary with the `release-checks` profile
//! (overflow checks and debug assertions off, as in release), where wrapped
//! size arithmetic would show.

// Arrays of one range are the slicing API's argument, not a mistaken range.
#![allow(clippy::single_range_in_vec_init)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::{Rng, RngExt, SeedableRng};
use rime::layers::Error as LayerError;
use rime::layers::config::{LayerConfig, layer_from_config};
use rime::layers::models::{load_weights, save_weights};
use rime::prelude::*;
use rime::tape::Error as TapeError;
use rime::tensor::Error as TensorError;
use serde_json::{Value, json};

// ------------------------------------------------------------- helpers

fn bits(t: &Tensor<f32>) -> Vec<u32> {
    t.as_slice().iter().map(|v| v.to_bits()).collect()
}

fn var_bits(vars: &[Variable<f32>]) -> Vec<Vec<u32>> {
    vars.iter().map(|v| bits(&v.value_untracked())).collect()
}

/// Everything an optimizer step could change: values, slots, iterations.
fn opt_state(
    opt: &dyn Optimizer<f32>,
    vars: &[Variable<f32>],
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>, u64) {
    let slots = vars
        .iter()
        .flat_map(|v| opt.slots(v))
        .map(|(_, t)| bits(&t))
        .collect();
    (var_bits(vars), slots, opt.iterations())
}

/// The tensor error inside a layers error, if that is what it is.
fn tensor_err(e: &LayerError) -> Option<&TensorError> {
    match e {
        LayerError::Tensor(t) => Some(t),
        LayerError::Tape(t) => match &**t {
            TapeError::Tensor(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `Error::ShapeOverflow` naming the op.
    Overflow,
    /// `Error::Alloc` naming the op.
    Alloc,
    /// Any other typed error naming the op.
    Other,
}

fn check_tensor_err(name: &str, op: &str, kind: Kind, e: &TensorError) {
    assert_eq!(e.op(), op, "{name}: {e}");
    match kind {
        Kind::Overflow => assert!(
            matches!(e, TensorError::ShapeOverflow { .. }),
            "{name}: {e:?}"
        ),
        Kind::Alloc => assert!(
            matches!(e, TensorError::Alloc { bytes, .. } if *bytes > 1 << 40),
            "{name}: {e:?}"
        ),
        Kind::Other => assert!(
            !matches!(
                e,
                TensorError::ShapeOverflow { .. } | TensorError::Alloc { .. }
            ),
            "{name}: {e:?}"
        ),
    }
    assert!(
        e.to_string().starts_with(op),
        "{name}: message names the op: {e}"
    );
}

type TensorCase<'a> = (
    &'static str,
    &'static str,
    Kind,
    Box<dyn Fn() -> Result<Tensor<f32>, TensorError> + 'a>,
);

// ------------------------------------------------------------- tensors

/// Sizes and shapes: overflowing element counts and byte sizes, and sizes
/// no allocator gives, for every constructor and op that sizes a buffer.
/// (These are the cases that wrote past buffers or aborted before.)
fn size_cases<'a>(
    small: &'a Tensor<f32>,
    col: &'a Tensor<f32>,
    row: &'a Tensor<f32>,
) -> Vec<TensorCase<'a>> {
    const HUGE: usize = (1 << 63) + 1;
    let r = || seeded_rng(1);
    vec![
        (
            "zeros wraps to 2 elements",
            "zeros",
            Kind::Overflow,
            Box::new(|| Tensor::zeros([HUGE, 2])),
        ),
        (
            "zeros usize::MAX",
            "zeros",
            Kind::Overflow,
            Box::new(|| Tensor::zeros([usize::MAX, 2])),
        ),
        (
            "zeros bytes overflow",
            "zeros",
            Kind::Overflow,
            Box::new(|| Tensor::zeros([1 << 62])),
        ),
        (
            "zeros 2^42",
            "zeros",
            Kind::Alloc,
            Box::new(|| Tensor::zeros([1 << 42])),
        ),
        (
            "ones wraps",
            "ones",
            Kind::Overflow,
            Box::new(|| Tensor::ones([1 << 32, 1 << 32])),
        ),
        (
            "ones 2^42",
            "ones",
            Kind::Alloc,
            Box::new(|| Tensor::ones([1 << 21, 1 << 21])),
        ),
        (
            "full wraps",
            "full",
            Kind::Overflow,
            Box::new(|| Tensor::full([HUGE, 2, 1], 1.0)),
        ),
        (
            "full 2^42",
            "full",
            Kind::Alloc,
            Box::new(|| Tensor::full([1 << 42], 1.0)),
        ),
        (
            "eye wraps",
            "eye",
            Kind::Overflow,
            Box::new(|| Tensor::eye(1 << 32)),
        ),
        (
            "eye 2^42",
            "eye",
            Kind::Alloc,
            Box::new(|| Tensor::eye(1 << 21)),
        ),
        (
            "rand_uniform wraps",
            "rand_uniform",
            Kind::Overflow,
            Box::new(move || Tensor::rand_uniform([HUGE, 2], 0.0, 1.0, &mut r())),
        ),
        (
            "rand_uniform 2^42",
            "rand_uniform",
            Kind::Alloc,
            Box::new(move || Tensor::rand_uniform([1 << 42], 0.0, 1.0, &mut r())),
        ),
        (
            "rand_normal wraps",
            "rand_normal",
            Kind::Overflow,
            Box::new(move || Tensor::rand_normal([HUGE, 2], 0.0, 1.0, &mut r())),
        ),
        (
            "rand_normal 2^42",
            "rand_normal",
            Kind::Alloc,
            Box::new(move || Tensor::rand_normal([1 << 42], 0.0, 1.0, &mut r())),
        ),
        (
            "rand_truncated_normal wraps",
            "rand_truncated_normal",
            Kind::Overflow,
            Box::new(move || Tensor::rand_truncated_normal([usize::MAX], 0.0, 1.0, &mut r())),
        ),
        (
            "rand_truncated_normal 2^42",
            "rand_truncated_normal",
            Kind::Alloc,
            Box::new(move || Tensor::rand_truncated_normal([1 << 42], 0.0, 1.0, &mut r())),
        ),
        (
            "one_hot wraps",
            "one_hot",
            Kind::Overflow,
            Box::new(|| Tensor::one_hot(&[0, 1], usize::MAX)),
        ),
        (
            "one_hot 2^42",
            "one_hot",
            Kind::Alloc,
            Box::new(|| Tensor::one_hot(&[0, 1], 1 << 41)),
        ),
        (
            "arange 4e13 elements",
            "arange",
            Kind::Alloc,
            Box::new(|| Tensor::arange(0.0, 1e13, 1.0)),
        ),
        (
            "linspace usize::MAX",
            "linspace",
            Kind::Overflow,
            Box::new(|| Tensor::linspace(0.0, 1.0, usize::MAX)),
        ),
        (
            "linspace 2^42",
            "linspace",
            Kind::Alloc,
            Box::new(|| Tensor::linspace(0.0, 1.0, 1 << 42)),
        ),
        (
            "from_vec zero-size huge dims",
            "from_vec",
            Kind::Overflow,
            Box::new(|| Tensor::from_vec(vec![], [0, 1 << 40, 1 << 40])),
        ),
        (
            "from_slice zero-size huge dims",
            "from_slice",
            Kind::Overflow,
            Box::new(|| Tensor::from_slice(&[], [1 << 40, 1 << 40, 0])),
        ),
        (
            "reshape wraps",
            "reshape",
            Kind::Overflow,
            Box::new(move || small.reshape([HUGE, 2])),
        ),
        (
            "broadcast_to wraps",
            "broadcast_to",
            Kind::Overflow,
            Box::new(move || small.broadcast_to([1 << 62, 1 << 62, 6])),
        ),
        (
            "broadcast_to 2^42",
            "broadcast_to",
            Kind::Alloc,
            Box::new(move || small.broadcast_to([1 << 39, 6])),
        ),
        (
            "add broadcast 2^42",
            "add",
            Kind::Alloc,
            Box::new(move || col.add(row)),
        ),
        (
            "mul broadcast 2^42",
            "mul",
            Kind::Alloc,
            Box::new(move || col.mul(row)),
        ),
        (
            "maximum broadcast 2^42",
            "maximum",
            Kind::Alloc,
            Box::new(move || col.maximum(row)),
        ),
        (
            "lt broadcast 2^42",
            "lt",
            Kind::Alloc,
            Box::new(move || col.lt(row)),
        ),
        (
            "select broadcast 2^42",
            "select",
            Kind::Alloc,
            Box::new(move || Tensor::select(col, row, &Tensor::scalar(0.0))),
        ),
        (
            "add zero-size broadcast wraps",
            "add",
            Kind::Overflow,
            Box::new(|| {
                Tensor::<f32>::zeros([1 << 40, 1, 0])?.add(&Tensor::zeros([1, 1 << 40, 0])?)
            }),
        ),
        (
            "matmul output wraps",
            "matmul",
            Kind::Overflow,
            Box::new(|| Tensor::<f32>::zeros([1 << 40, 0])?.matmul(&Tensor::zeros([0, 1 << 40])?)),
        ),
        (
            "matmul output 2^42",
            "matmul",
            Kind::Alloc,
            Box::new(|| Tensor::<f32>::zeros([1 << 21, 0])?.matmul(&Tensor::zeros([0, 1 << 21])?)),
        ),
        (
            "matmul batch wraps",
            "matmul",
            Kind::Overflow,
            Box::new(|| {
                Tensor::<f32>::zeros([1 << 40, 1, 2, 0])?.matmul(&Tensor::zeros([
                    1,
                    1 << 40,
                    0,
                    2,
                ])?)
            }),
        ),
        (
            "concat dims overflow",
            "concat",
            Kind::Overflow,
            Box::new(|| {
                let t = Tensor::<f32>::zeros([1 << 60, 0])?;
                Tensor::concat(&[&t; 16], 0)
            }),
        ),
        (
            "concat bytes overflow",
            "concat",
            Kind::Overflow,
            Box::new(|| {
                let t = Tensor::<f32>::zeros([1 << 60, 0])?;
                Tensor::concat(&[&t, &t], 0)
            }),
        ),
        (
            "stack overflow",
            "concat",
            Kind::Overflow,
            Box::new(|| {
                let t = Tensor::<f32>::zeros([1 << 60, 0])?;
                Tensor::stack(&[&t, &t, &t, &t], 0)
            }),
        ),
        (
            "pad 2^42",
            "pad",
            Kind::Alloc,
            Box::new(move || small.pad(&[(0, 0), (1 << 40, 0)])),
        ),
        (
            "pad wraps",
            "pad",
            Kind::Overflow,
            Box::new(move || small.pad(&[(1 << 62, 0), (1 << 62, 0)])),
        ),
        (
            "gather index shape wraps",
            "gather",
            Kind::Overflow,
            // no elements anywhere, but [0, 2^40] ids on a [0, 2^30] table
            // would give a [0, 2^40, 2^30] result: its strides overflow
            Box::new(|| {
                Tensor::<f32>::zeros([0, 1 << 30])?.gather(0, &Tensor::<i64>::zeros([0, 1 << 40])?)
            }),
        ),
    ]
}

/// Ordinary misuse: every op that checks its arguments names itself.
fn argument_cases<'a>(a: &'a Tensor<f32>, b: &'a Tensor<f32>) -> Vec<TensorCase<'a>> {
    vec![
        ("add shapes", "add", Kind::Other, Box::new(move || a.add(b))),
        ("sub shapes", "sub", Kind::Other, Box::new(move || a.sub(b))),
        ("div shapes", "div", Kind::Other, Box::new(move || a.div(b))),
        ("pow shapes", "pow", Kind::Other, Box::new(move || a.pow(b))),
        ("eq shapes", "eq", Kind::Other, Box::new(move || a.eq(b))),
        (
            "select shapes",
            "select",
            Kind::Other,
            Box::new(move || Tensor::select(a, b, a)),
        ),
        (
            "matmul inner",
            "matmul",
            Kind::Other,
            Box::new(move || a.matmul(a)),
        ),
        (
            "matmul scalar",
            "matmul",
            Kind::Other,
            Box::new(move || a.matmul(&Tensor::scalar(1.0))),
        ),
        (
            "matmul_t_blocks range",
            "matmul_t_blocks",
            Kind::Other,
            Box::new(move || a.matmul_t_blocks(a, false, true, Some(&[0..5]), None)),
        ),
        (
            "matmul_t_blocks reversed",
            "matmul_t_blocks",
            Kind::Other,
            Box::new(move || {
                #[allow(clippy::reversed_empty_ranges)]
                let r = [2..1];
                a.matmul_t_blocks(a, false, true, Some(&r), None)
            }),
        ),
        (
            "sum axis",
            "sum",
            Kind::Other,
            Box::new(move || a.sum(&[2], false)),
        ),
        (
            "mean axis twice",
            "mean",
            Kind::Other,
            Box::new(move || a.mean(&[0, -2], false)),
        ),
        (
            "var axis",
            "var",
            Kind::Other,
            Box::new(move || a.var(&[-3], true)),
        ),
        (
            "max axis",
            "max",
            Kind::Other,
            Box::new(move || a.max(&[5], false)),
        ),
        (
            "max of empty",
            "max",
            Kind::Other,
            Box::new(|| Tensor::<f32>::zeros([0, 2])?.max(&[0], false)),
        ),
        (
            "argmax axis",
            "argmax",
            Kind::Other,
            Box::new(move || a.argmax(3, false)?.to_dtype::<f32>()),
        ),
        (
            "logsumexp axis",
            "logsumexp",
            Kind::Other,
            Box::new(move || a.logsumexp(&[9], false)),
        ),
        (
            "sum_to",
            "sum_to",
            Kind::Other,
            Box::new(move || a.sum_to(&Shape::from([4]))),
        ),
        (
            "softmax axis",
            "softmax",
            Kind::Other,
            Box::new(move || a.softmax(4)),
        ),
        (
            "log_softmax axis",
            "log_softmax",
            Kind::Other,
            Box::new(move || a.log_softmax(-4)),
        ),
        (
            "sparse xent label",
            "sparse_softmax_cross_entropy",
            Kind::Other,
            Box::new(move || a.sparse_softmax_cross_entropy(&[0, 7])),
        ),
        (
            "sparse xent count",
            "sparse_softmax_cross_entropy",
            Kind::Other,
            Box::new(move || a.sparse_softmax_cross_entropy(&[0])),
        ),
        (
            "xent shapes",
            "softmax_cross_entropy",
            Kind::Other,
            Box::new(move || a.softmax_cross_entropy(b)),
        ),
        (
            "reshape count",
            "reshape",
            Kind::Other,
            Box::new(move || a.reshape([5])),
        ),
        (
            "flatten_from axis",
            "flatten_from",
            Kind::Other,
            Box::new(move || a.flatten_from(3)),
        ),
        (
            "unsqueeze axis",
            "unsqueeze",
            Kind::Other,
            Box::new(move || a.unsqueeze(4)),
        ),
        (
            "squeeze non-1",
            "squeeze",
            Kind::Other,
            Box::new(move || a.squeeze(&[0])),
        ),
        (
            "permute repeat",
            "permute",
            Kind::Other,
            Box::new(move || a.permute(&[0, 0])),
        ),
        (
            "transpose axis",
            "transpose",
            Kind::Other,
            Box::new(move || a.transpose(0, 2)),
        ),
        ("t of vector", "t", Kind::Other, Box::new(move || b.t())),
        (
            "broadcast_to incompatible",
            "broadcast_to",
            Kind::Other,
            Box::new(move || a.broadcast_to([3, 2])),
        ),
        (
            "concat none",
            "concat",
            Kind::Other,
            Box::new(|| Tensor::<f32>::concat(&[], 0)),
        ),
        (
            "concat ranks",
            "concat",
            Kind::Other,
            Box::new(move || Tensor::concat(&[a, b], 0)),
        ),
        (
            "stack shapes",
            "stack",
            Kind::Other,
            Box::new(move || Tensor::stack(&[a, b], 0)),
        ),
        (
            "slice bounds",
            "slice",
            Kind::Other,
            Box::new(move || a.slice(&[0..3])),
        ),
        (
            "slice too many",
            "slice",
            Kind::Other,
            Box::new(move || a.slice(&[0..1, 0..1, 0..1])),
        ),
        (
            "narrow overflow",
            "narrow",
            Kind::Other,
            Box::new(move || a.narrow(1, usize::MAX, 2)),
        ),
        (
            "pad too many",
            "pad",
            Kind::Other,
            Box::new(move || b.pad(&[(1, 1), (1, 1)])),
        ),
        (
            "index_select bounds",
            "index_select",
            Kind::Other,
            Box::new(move || a.index_select(0, &[0, 2])),
        ),
        (
            "gather negative id",
            "gather",
            Kind::Other,
            Box::new(move || a.gather(0, &Tensor::vector(vec![0i64, -1]))),
        ),
        (
            "to_dtype out of range",
            "to_dtype",
            Kind::Other,
            Box::new(move || a.add_scalar(3e9).to_dtype::<i32>()?.to_dtype::<f32>()),
        ),
        (
            "scatter_add shape",
            "scatter_add",
            Kind::Other,
            Box::new(move || a.scatter_add(0, &[0], a)),
        ),
        (
            "scatter_add index",
            "scatter_add",
            Kind::Other,
            Box::new(move || a.scatter_add(1, &[3, 0, 1], a)),
        ),
        (
            "one_hot index",
            "one_hot",
            Kind::Other,
            Box::new(|| Tensor::one_hot(&[3], 3)),
        ),
        (
            "from_vec length",
            "from_vec",
            Kind::Other,
            Box::new(|| Tensor::from_vec(vec![1.0; 5], [2, 3])),
        ),
        (
            "arange step 0",
            "arange",
            Kind::Other,
            Box::new(|| Tensor::arange(0.0, 1.0, 0.0)),
        ),
        (
            "arange NaN",
            "arange",
            Kind::Other,
            Box::new(|| Tensor::arange(f32::NAN, 1.0, 0.5)),
        ),
        (
            "arange too many",
            "arange",
            Kind::Other,
            Box::new(|| Tensor::arange(0.0, 1e30, 1e-30)),
        ),
        (
            "rand_uniform bounds",
            "rand_uniform",
            Kind::Other,
            Box::new(|| Tensor::rand_uniform([2], 1.0, 0.0, &mut seeded_rng(0))),
        ),
        (
            "rand_normal std",
            "rand_normal",
            Kind::Other,
            Box::new(|| Tensor::rand_normal([2], 0.0, -1.0, &mut seeded_rng(0))),
        ),
        (
            "to_scalar of many",
            "to_scalar",
            Kind::Other,
            Box::new(move || a.to_scalar().map(Tensor::scalar)),
        ),
        (
            "get out of bounds",
            "get",
            Kind::Other,
            Box::new(move || a.get(&[2, 0]).map(Tensor::scalar)),
        ),
    ]
}

#[test]
fn tensor_cases_are_typed_errors_and_change_nothing() {
    let small = Tensor::from_vec((0..6).map(|v| v as f32).collect(), [1, 6]).unwrap();
    let col = Tensor::<f32>::ones([1 << 21, 1]).unwrap();
    let row = Tensor::<f32>::ones([1, 1 << 21]).unwrap();
    let a = Tensor::from_vec(vec![1.0f32, -2.0, 3.5, 0.25, 5.0, -6.0], [2, 3]).unwrap();
    let b = Tensor::from_vec(vec![0.5f32, 1.5], [2]).unwrap();
    let before = [bits(&small), bits(&col), bits(&row), bits(&a), bits(&b)];
    let mut n = 0;
    for (name, op, kind, f) in size_cases(&small, &col, &row)
        .into_iter()
        .chain(argument_cases(&a, &b))
    {
        match f() {
            Ok(t) => panic!("{name}: expected an error, got shape {}", t.shape()),
            Err(e) => check_tensor_err(name, op, kind, &e),
        }
        n += 1;
    }
    assert!(n >= 90, "{n} tensor cases");
    let after = [bits(&small), bits(&col), bits(&row), bits(&a), bits(&b)];
    assert_eq!(before, after);
    // the library still works after all of it
    assert_eq!(a.matmul(&a.t().unwrap()).unwrap().shape(), &[2, 2]);
}

/// The reproduction: a 2-element tensor claiming 2^64 + 2 elements
/// used to be accepted and multiplied, writing past its buffer in release.
#[test]
fn overflowing_matmul_is_refused_before_any_kernel_runs() {
    let e = Tensor::<f32>::zeros([(1 << 63) + 1, 2]).unwrap_err();
    assert!(matches!(e, TensorError::ShapeOverflow { op: "zeros", .. }));
    assert!(e.to_string().contains("[9223372036854775809, 2]"), "{e}");
    let e = Tensor::<f32>::zeros([1 << 42]).unwrap_err();
    assert_eq!(
        e,
        TensorError::Alloc {
            op: "zeros",
            bytes: 1 << 44
        }
    );
    assert_eq!(e.to_string(), "zeros: cannot allocate 17592186044416 bytes");
}

// ------------------------------------------------------------- tapes, variables, masks

#[test]
fn tape_and_variable_cases() {
    let w = Variable::new(
        "w",
        Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap(),
    );
    let before = bits(&w.value_untracked());
    let mut n = 0;
    let mut case = |name: &str, r: Result<(), TapeError>, ok: fn(&TapeError) -> bool| {
        let e = r.expect_err(name);
        assert!(ok(&e), "{name}: {e:?}");
        assert_eq!(
            bits(&w.value_untracked()),
            before,
            "{name} changed the variable"
        );
        assert!(w.mask().is_none(), "{name} changed the mask");
        n += 1;
    };
    let z = |s: &[usize]| Tensor::<f32>::zeros(s.to_vec()).unwrap();
    case("assign shape", w.assign(&z(&[4])), |e| {
        matches!(e, TapeError::AssignShape { .. })
    });
    case("assign rank", w.assign(&z(&[2, 2, 1])), |e| {
        matches!(e, TapeError::AssignShape { .. })
    });
    case("assign_add shape", w.assign_add(&z(&[2])), |e| {
        matches!(e, TapeError::AssignShape { .. })
    });
    case("assign_sub shape", w.assign_sub(&z(&[3, 2])), |e| {
        matches!(e, TapeError::AssignShape { .. })
    });
    case(
        "assign inside update",
        w.update(|_| w.assign(&z(&[2, 2]))).unwrap(),
        |e| matches!(e, TapeError::ReentrantUpdate { call: "assign", .. }),
    );
    case(
        "update inside update",
        w.update(|_| w.update(|d| d[0] = 9.0).map(|_| ())).unwrap(),
        |e| matches!(e, TapeError::ReentrantUpdate { call: "update", .. }),
    );
    case(
        "assign_add inside update",
        w.update(|_| w.assign_add(&z(&[2, 2]))).unwrap(),
        |e| matches!(e, TapeError::ReentrantUpdate { .. }),
    );
    let mask_err = |e: &TapeError| matches!(e, TapeError::Mask { .. });
    case(
        "mask rows",
        w.set_mask(Some(TrainableMask::rows(1..3))),
        mask_err,
    );
    case(
        "mask cols",
        w.set_mask(Some(TrainableMask::cols(5..6))),
        mask_err,
    );
    case(
        "mask axis",
        w.set_mask(Some(TrainableMask::axis_ranges(2, 0..1))),
        mask_err,
    );
    case(
        "mask element",
        w.set_mask(Some(TrainableMask::elements([vec![0, 2]]))),
        mask_err,
    );
    case(
        "mask element rank",
        w.set_mask(Some(TrainableMask::elements([vec![0]]))),
        mask_err,
    );
    case(
        "mask bools shape",
        w.set_mask(Some(TrainableMask::from_bools([4], vec![true; 4]))),
        mask_err,
    );
    case(
        "mask bools count",
        w.set_mask(Some(TrainableMask::from_bools([2, 2], vec![true; 3]))),
        mask_err,
    );
    case(
        "mask union with bad part",
        w.set_mask(Some(
            TrainableMask::rows(0..1).union(TrainableMask::rows(0..9)),
        )),
        mask_err,
    );
    case(
        "mask of overflowing shape",
        TrainableMask::all()
            .resolve("x", &Shape::from([1 << 62, 1 << 62]))
            .map(|_| ()),
        mask_err,
    );
    case(
        "mask of unallocatable shape",
        TrainableMask::all()
            .resolve("x", &Shape::from([1 << 50]))
            .map(|_| ()),
        mask_err,
    );
    // tapes: a failed gradient call does not poison a persistent tape
    let tape = GradientTape::persistent();
    let y = w.value().square().sum_all();
    let bad_seed = [z(&[3])];
    case(
        "output gradient shape",
        tape.gradient_with(
            &[&y],
            &[&w],
            GradientOptions {
                output_gradients: Some(&bad_seed),
                ..Default::default()
            },
        )
        .map(|_| ()),
        |e| matches!(e, TapeError::OutputGradientShape { .. }),
    );
    case(
        "seed count",
        tape.gradient_with(
            &[&y],
            &[&w],
            GradientOptions {
                output_gradients: Some(&[]),
                ..Default::default()
            },
        )
        .map(|_| ()),
        |_| true,
    );
    case(
        "batch_jacobian without batch",
        tape.batch_jacobian(&y, &w).map(|_| ()),
        |_| true,
    );
    let g = tape.gradient(&y, &[&w]).unwrap()[0].clone().unwrap();
    assert_eq!(g.to_vec(), vec![2.0, 4.0, 6.0, 8.0]);
    drop(tape);
    let once = GradientTape::new();
    let y = w.value().sum_all();
    once.gradient(&y, &[&w]).unwrap();
    case(
        "second gradient",
        once.gradient(&y, &[&w]).map(|_| ()),
        |e| matches!(e, TapeError::TapeExhausted { .. }),
    );
    let tape = GradientTape::new();
    let x = Tensor::vector(vec![1.0f32, 2.0]);
    tape.watch(&x);
    let bad = custom_gradient(
        "two_grads",
        &[&x],
        |xs| Ok(xs[0].clone()),
        |_, _, dy| Ok(vec![Some(dy.clone()), Some(dy.clone())]),
    )
    .unwrap();
    case(
        "custom gradient count",
        tape.gradient(&bad.sum_all(), &[&x]).map(|_| ()),
        |e| matches!(e, TapeError::CustomGradient { .. }),
    );
    assert!(n >= 20, "{n} tape cases");
}

/// Reading a variable inside its own update closure used to deadlock.
#[test]
fn reading_inside_update_sees_the_old_value() {
    let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap());
    let seen = w
        .update(|d| {
            let old = (
                w.to_vec(),
                w.value().to_vec(),
                w.value_untracked().to_vec(),
                w.shape(),
                w.len(),
            );
            d[0] = 5.0;
            old
        })
        .unwrap();
    assert_eq!(seen.0, vec![1.0, 2.0]);
    assert_eq!(seen.1, vec![1.0, 2.0]);
    assert_eq!(seen.2, vec![1.0, 2.0]);
    assert_eq!(seen.3, [2]);
    assert_eq!(seen.4, 2);
    assert_eq!(w.to_vec(), vec![5.0, 2.0]);
    // other threads wait for the update, then see the new value
    let w2 = w.clone();
    let seen = w
        .update(|d| {
            let h = std::thread::spawn(move || w2.to_vec());
            d[1] = 7.0;
            h
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(seen, vec![5.0, 7.0]);
}

// ------------------------------------------------------------- optimizers

fn fresh_var() -> Variable<f32> {
    Variable::new("w", Tensor::from_vec(vec![0.5f32, -1.0, 2.0], [3]).unwrap())
}

fn grad() -> Vec<Option<Tensor<f32>>> {
    vec![Some(
        Tensor::from_vec(vec![0.0f32, 1.0, -2.0], [3]).unwrap(),
    )]
}

type OptCtor = Box<dyn Fn() -> Box<dyn Optimizer<f32>>>;

fn bad_hyperparameters() -> Vec<(&'static str, OptCtor)> {
    fn b<O: Optimizer<f32> + 'static>(o: O) -> Box<dyn Optimizer<f32>> {
        Box::new(o)
    }
    vec![
        ("adam beta_1 = 1", Box::new(|| b(Adam::new().beta_1(1.0)))),
        ("adam beta_1 < 0", Box::new(|| b(Adam::new().beta_1(-0.1)))),
        (
            "adam beta_1 NaN",
            Box::new(|| b(Adam::new().beta_1(f64::NAN))),
        ),
        ("adam beta_2 = 1", Box::new(|| b(Adam::new().beta_2(1.0)))),
        ("adam beta_2 > 1", Box::new(|| b(Adam::new().beta_2(1.5)))),
        ("adam epsilon = 0", Box::new(|| b(Adam::new().epsilon(0.0)))),
        (
            "adam epsilon < 0",
            Box::new(|| b(Adam::new().epsilon(-1e-7))),
        ),
        (
            "adam epsilon inf",
            Box::new(|| b(Adam::new().epsilon(f64::INFINITY))),
        ),
        (
            "adam lr < 0",
            Box::new(|| b(Adam::new().learning_rate(-0.1))),
        ),
        (
            "adam lr NaN",
            Box::new(|| b(Adam::new().learning_rate(f64::NAN))),
        ),
        (
            "adam lr inf",
            Box::new(|| b(Adam::new().learning_rate(f64::INFINITY))),
        ),
        ("adam clipnorm 0", Box::new(|| b(Adam::new().clipnorm(0.0)))),
        (
            "adam clipvalue < 0",
            Box::new(|| b(Adam::new().clipvalue(-1.0))),
        ),
        (
            "adam global_clipnorm NaN",
            Box::new(|| b(Adam::new().global_clipnorm(f64::NAN))),
        ),
        (
            "adam two clips",
            Box::new(|| b(Adam::new().clipnorm(1.0).clipvalue(1.0))),
        ),
        (
            "adam weight_decay < 0",
            Box::new(|| b(Adam::new().weight_decay(-0.1))),
        ),
        ("adamw beta_2 = 1", Box::new(|| b(AdamW::new().beta_2(1.0)))),
        ("adamw epsilon 0", Box::new(|| b(AdamW::new().epsilon(0.0)))),
        (
            "adamw weight_decay NaN",
            Box::new(|| b(AdamW::new().weight_decay(f64::NAN))),
        ),
        ("rmsprop rho = 1", Box::new(|| b(RmsProp::new().rho(1.0)))),
        ("rmsprop rho < 0", Box::new(|| b(RmsProp::new().rho(-0.5)))),
        (
            "rmsprop epsilon 0",
            Box::new(|| b(RmsProp::new().epsilon(0.0))),
        ),
        (
            "rmsprop momentum > 1",
            Box::new(|| b(RmsProp::new().momentum(1.5))),
        ),
        (
            "rmsprop lr NaN",
            Box::new(|| b(RmsProp::new().learning_rate(f64::NAN))),
        ),
        (
            "sgd momentum > 1",
            Box::new(|| b(Sgd::new().momentum(1.01))),
        ),
        (
            "sgd momentum < 0",
            Box::new(|| b(Sgd::new().momentum(-0.5))),
        ),
        ("sgd lr < 0", Box::new(|| b(Sgd::new().learning_rate(-1.0)))),
        ("sgd clipvalue 0", Box::new(|| b(Sgd::new().clipvalue(0.0)))),
    ]
}

#[test]
fn optimizer_hyperparameters_are_checked_before_anything_changes() {
    for (name, make) in bad_hyperparameters() {
        let mut opt = make();
        let vars = [fresh_var()];
        let before = opt_state(&*opt, &vars);
        let e = opt.apply_gradients(&grad(), &vars).expect_err(name);
        assert!(
            matches!(e, LayerError::InvalidArgument { .. }),
            "{name}: {e:?}"
        );
        assert!(e.to_string().contains(opt.name()), "{name}: {e}");
        assert_eq!(opt_state(&*opt, &vars), before, "{name}");
        assert_eq!(opt.tracked_variables(), 0, "{name}");
        assert!(vars[0].to_vec().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn optimizer_argument_errors_after_a_step_change_nothing() {
    let makers: [MakeOptimizer; 3] = [
        || Box::new(Adam::new()),
        || Box::new(RmsProp::new().momentum(0.5).centered(true)),
        || Box::new(Sgd::new().momentum(0.9)),
    ];
    for make in makers {
        let mut opt = make();
        let vars = [fresh_var(), Variable::new("b", Tensor::ones([2]).unwrap())];
        let g = vec![grad()[0].clone(), Some(Tensor::ones([2]).unwrap())];
        opt.apply_gradients(&g, &vars).unwrap();
        let before = opt_state(&*opt, &vars);
        let cases: Vec<(&str, Vec<Option<Tensor<f32>>>)> = vec![
            ("all None", vec![None, None]),
            ("count", vec![g[0].clone()]),
            (
                "shape",
                vec![g[0].clone(), Some(Tensor::ones([3]).unwrap())],
            ),
            (
                "rank",
                vec![Some(Tensor::ones([3, 1]).unwrap()), g[1].clone()],
            ),
        ];
        for (name, grads) in cases {
            let e = opt.apply_gradients(&grads, &vars).expect_err(name);
            assert!(
                e.to_string().contains(opt.name()) || matches!(e, LayerError::Tensor(_)),
                "{name}: {e}"
            );
            assert_eq!(opt_state(&*opt, &vars), before, "{} {name}", opt.name());
        }
        // applying from inside a variable's update is an error too
        let e = vars[0]
            .update(|_| opt.apply_gradients(&g, &vars))
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(e, LayerError::Tape(ref t) if matches!(**t, TapeError::ReentrantUpdate { .. })),
            "{e:?}"
        );
        assert_eq!(opt_state(&*opt, &vars), before);
    }
}

// ------------------------------------------------------------- layers and models

#[test]
fn layer_and_model_cases() {
    let dense = Dense::<f32>::new(3);
    dense.call(&Tensor::ones([2, 4]).unwrap(), false).unwrap();
    let weights = || var_bits(&dense.weights());
    let before = weights();
    let mut n = 0;
    let mut case = |name: &str, r: Result<(), LayerError>| {
        let e = r.expect_err(name);
        assert!(!e.to_string().is_empty());
        assert_eq!(weights(), before, "{name} changed the weights");
        n += 1;
    };
    let t = |s: &[usize]| Tensor::<f32>::ones(s.to_vec()).unwrap();
    case("dense width", dense.call(&t(&[2, 5]), false).map(|_| ()));
    case(
        "dense scalar",
        dense.call(&Tensor::scalar(1.0), false).map(|_| ()),
    );
    case("set_weights count", dense.set_weights(&[t(&[4, 3])]));
    case(
        "set_weights shape",
        dense.set_weights(&[t(&[4, 3]), t(&[4])]),
    );
    case(
        "set_weights order",
        dense.set_weights(&[t(&[3]), t(&[4, 3])]),
    );
    case(
        "set_weights extra",
        dense.set_weights(&[t(&[4, 3]), t(&[3]), t(&[3])]),
    );
    // layers that fail to build stay unbuilt, with no weights
    let unbuilt = |name: &str, layer: &dyn Layer<f32>, x: &Tensor<f32>| {
        let e = layer.call(x, false).expect_err(name);
        assert!(layer.weights().is_empty(), "{name}: {e}");
        e
    };
    let e = unbuilt(
        "dense 2^42 kernel",
        &Dense::new(1 << 20),
        &Tensor::zeros([1, 1 << 22]).unwrap(),
    );
    assert!(
        matches!(tensor_err(&e), Some(TensorError::Alloc { .. })),
        "{e:?}"
    );
    let e = unbuilt("dense units 0", &Dense::new(0), &t(&[1, 2]));
    assert!(matches!(e, LayerError::Input { .. }), "{e:?}");
    let e = unbuilt("dense units huge", &Dense::new((1 << 62) + 1), &t(&[1, 4]));
    assert!(matches!(e, LayerError::Input { .. }), "{e:?}");
    n += 3;
    // symbolic inputs too large for memory: the first layer reports it
    let x = Input::<f32>::new([1 << 40]);
    let Err(e) = x.apply(Dense::new(4)) else {
        panic!("accepted")
    };
    assert!(
        matches!(tensor_err(&e), Some(TensorError::Alloc { .. })),
        "{e:?}"
    );
    let x = Input::<f32>::new([1 << 40]);
    let double = Lambda::new("double", |xs: &[Tensor<f32>]| {
        Ok(vec![xs[0].mul_scalar(2.0)])
    });
    let Err(e) = x.apply(double) else {
        panic!("accepted")
    };
    assert!(
        matches!(tensor_err(&e), Some(TensorError::Alloc { .. })),
        "{e:?}"
    );
    let x = Input::<f32>::new([2, usize::MAX]);
    let Err(e) = x.apply(Dense::new(4)) else {
        panic!("accepted")
    };
    assert!(tensor_err(&e).is_some(), "{e:?}");
    n += 3;
    // batch normalization: wrong features, empty batch; statistics unchanged
    let bn = BatchNormalization::<f32>::new();
    bn.call(
        &Tensor::rand_normal([4, 3], 0.0, 1.0, &mut seeded_rng(3)).unwrap(),
        true,
    )
    .unwrap();
    let stats = || var_bits(&bn.weights());
    let s0 = stats();
    for (name, x) in [
        ("bn features", t(&[4, 5])),
        ("bn empty batch", t(&[0, 3])),
        ("bn rank", t(&[3])),
    ] {
        bn.call(&x, true).expect_err(name);
        assert_eq!(stats(), s0, "{name}");
        n += 1;
    }
    // embeddings: indices out of range, negative, fractional, NaN
    let emb = Embedding::<f32>::new(5, 2);
    emb.call(&Tensor::from_vec(vec![0.0, 4.0], [2]).unwrap(), false)
        .unwrap();
    let e0 = var_bits(&emb.weights());
    for v in [5.0, -1.0, 1.5, f32::NAN, 1e30] {
        emb.call(&Tensor::vector(vec![v]), false)
            .expect_err("embedding index");
        assert_eq!(var_bits(&emb.weights()), e0, "embedding {v}");
        n += 1;
    }
    // merge layers and graphs
    let (a, b) = (Input::<f32>::new([3]), Input::<f32>::new([4]));
    assert!(call_symbolic(Add::new(), &[&a, &b]).is_err());
    assert!(call_symbolic(Multiply::new(), &[&a, &b]).is_err());
    assert!(call_symbolic(Concatenate::new().axis(0), &[&a, &b]).is_err());
    assert!(
        call_symbolic(Concatenate::new(), &[&a]).is_err()
            || call_symbolic(Concatenate::<f32>::new(), &[]).is_err()
    );
    assert!(
        Model::new(&[&a], &[&b]).is_err(),
        "an output not computed from the inputs"
    );
    assert!(Reshape::new(vec![5]).call(&t(&[2, 4]), false).is_err());
    n += 6;
    assert!(n >= 22, "{n} layer cases");
}

/// A model with batch normalization, its train step and everything the step
/// could change.
fn bn_model() -> Sequential<f32> {
    Sequential::new()
        .add(Dense::new(4))
        .add(BatchNormalization::new())
        .add(Dense::new(2))
        .with_input_shape([3])
        .unwrap()
}

/// Bits of every weight, of the non-trainable weights, of the optimizer
/// slots, and the iteration count.
type StepState = (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<Vec<u32>>, u64);

/// A named failing step: its inputs and targets.
type StepCase = (&'static str, Vec<Tensor<f32>>, Vec<Tensor<f32>>);

/// A fresh optimizer of one kind.
type MakeOptimizer = fn() -> Box<dyn Optimizer<f32>>;

fn step_state(model: &Sequential<f32>, step: &TrainStep<'_, f32>) -> StepState {
    let all = model.weights();
    let non_trainable = var_bits(&model.non_trainable_weights());
    let (values, slots, iterations) = opt_state(step.optimizer(), &all);
    (values, non_trainable, slots, iterations)
}

#[test]
fn a_failed_train_step_changes_nothing() {
    let x = Tensor::rand_normal([8, 3], 0.0, 1.0, &mut seeded_rng(5)).unwrap();
    let y = Tensor::rand_normal([8, 2], 0.0, 1.0, &mut seeded_rng(6)).unwrap();
    let model = bn_model();
    let mut step = TrainStep::new(&model, Adam::new(), MeanSquaredError::new());
    step.run(&x, &y).unwrap();
    let before = step_state(&model, &step);
    assert_eq!(before.3, 1);
    let cases: Vec<StepCase> = vec![
        (
            "target shape",
            vec![x.clone()],
            vec![Tensor::zeros([8, 3]).unwrap()],
        ),
        (
            "target batch",
            vec![x.clone()],
            vec![Tensor::zeros([7, 2]).unwrap()],
        ),
        ("two targets", vec![x.clone()], vec![y.clone(), y.clone()]),
        ("no targets", vec![x.clone()], vec![]),
        (
            "input width",
            vec![Tensor::zeros([8, 4]).unwrap()],
            vec![y.clone()],
        ),
        ("two inputs", vec![x.clone(), x.clone()], vec![y.clone()]),
    ];
    for (name, xs, ys) in cases {
        step.run_many(&xs, &ys).expect_err(name);
        assert_eq!(step_state(&model, &step), before, "{name}");
    }
    // an optimizer that fails at apply: the forward pass ran (and moved the
    // moving statistics before), the failed step must not commit them
    let model = bn_model();
    let stats = var_bits(&model.non_trainable_weights());
    let mut bad = TrainStep::new(&model, Adam::new().beta_1(1.0), MeanSquaredError::new());
    let e = bad.run(&x, &y).unwrap_err();
    assert!(matches!(e, LayerError::InvalidArgument { .. }), "{e:?}");
    assert_eq!(var_bits(&model.non_trainable_weights()), stats);
    assert_eq!(bad.optimizer().iterations(), 0);
    // a loss that fails: targets outside what the loss accepts
    let mut xent = TrainStep::new(&model, Sgd::new(), SparseCategoricalCrossentropy::new());
    xent.run(&x, &Tensor::full([8], 7.0).unwrap())
        .expect_err("label 7 of 2 classes");
    assert_eq!(var_bits(&model.non_trainable_weights()), stats);
    // and a good step afterwards commits them
    let mut good = TrainStep::new(&model, Adam::new(), MeanSquaredError::new());
    good.run(&x, &y).unwrap();
    assert_ne!(var_bits(&model.non_trainable_weights()), stats);
}

// ------------------------------------------------------------- configs

fn dense_cfg(units: Value) -> LayerConfig {
    LayerConfig {
        class_name: "Dense".into(),
        config: json!({ "units": units }),
    }
}

#[test]
fn config_cases() {
    let mut cases: Vec<(&str, LayerConfig)> = vec![
        (
            "dense units 2^62+1",
            dense_cfg(json!(4611686018427387905u64)),
        ),
        ("dense units u64::MAX", dense_cfg(json!(u64::MAX))),
        ("dense units 0", dense_cfg(json!(0))),
        ("dense units -1", dense_cfg(json!(-1))),
        ("dense units 1.5", dense_cfg(json!(1.5))),
        ("dense units string", dense_cfg(json!("4"))),
        ("dense units null", dense_cfg(Value::Null)),
    ];
    let mk = |class: &str, config: Value| LayerConfig {
        class_name: class.into(),
        config,
    };
    cases.extend([
        (
            "embedding input_dim huge",
            mk(
                "Embedding",
                json!({"input_dim": 1u64 << 60, "output_dim": 2}),
            ),
        ),
        (
            "embedding output_dim 0",
            mk("Embedding", json!({"input_dim": 3, "output_dim": 0})),
        ),
        ("dropout rate 1", mk("Dropout", json!({"rate": 1.0}))),
        ("dropout rate < 0", mk("Dropout", json!({"rate": -0.5}))),
        (
            "dropout noise_shape 0",
            mk("Dropout", json!({"rate": 0.5, "noise_shape": [null, 0]})),
        ),
        (
            "reshape overflow",
            mk("Reshape", json!({"target_shape": [1u64 << 40, 1u64 << 40]})),
        ),
        (
            "reshape two -1",
            mk("Reshape", json!({"target_shape": [-1, -1]})),
        ),
        (
            "reshape zero",
            mk("Reshape", json!({"target_shape": [0, 2]})),
        ),
        (
            "bn momentum",
            mk("BatchNormalization", json!({"momentum": 2.0})),
        ),
        (
            "bn epsilon",
            mk("BatchNormalization", json!({"epsilon": -1.0})),
        ),
        (
            "layernorm epsilon",
            mk("LayerNormalization", json!({"epsilon": -1.0})),
        ),
        ("unknown class", mk("NoSuchLayer", json!({}))),
        ("config not an object", mk("Dense", json!([1, 2]))),
    ]);
    let n = cases.len();
    for (name, cfg) in cases {
        let r = layer_from_config::<f32>(&cfg).and_then(|l| {
            // some fields are only checked when the layer builds
            l.call(&Tensor::ones([2, 4]).unwrap(), true).map(|_| l)
        });
        match r {
            Ok(_) => panic!("{name}: accepted"),
            Err(e) => assert!(!e.to_string().is_empty(), "{name}"),
        }
    }
    assert!(n >= 20);
}

// ------------------------------------------------------------- weights files

fn weights_model() -> Sequential<f32> {
    Sequential::new()
        .add(Dense::new(3))
        .add(Dense::new(2))
        .with_input_shape([4])
        .unwrap()
}

#[test]
fn weights_file_cases() {
    let dir = std::env::temp_dir().join(format!("rime_bad_inputs_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = weights_model();
    let good = dir.join("good.safetensors");
    save_weights(&model, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let other = Sequential::<f32>::new()
        .add(Dense::new(5))
        .with_input_shape([4])
        .unwrap();
    let other_path = dir.join("other.safetensors");
    save_weights(&other, &other_path).unwrap();
    let f64_model = Sequential::<f64>::new()
        .add(Dense::new(3))
        .add(Dense::new(2))
        .with_input_shape([4])
        .unwrap();
    let f64_path = dir.join("f64.safetensors");
    save_weights(&f64_model, &f64_path).unwrap();
    let target = weights_model();
    let before = var_bits(&target.weights());
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let mut header_huge = bytes.clone();
    header_huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let cases = vec![
        ("missing file", dir.join("nope.safetensors")),
        ("empty", write("empty", &[])),
        (
            "garbage",
            write("garbage", b"not a safetensors file at all"),
        ),
        ("truncated header", write("trunc1", &bytes[..12])),
        ("truncated data", write("trunc2", &bytes[..bytes.len() - 4])),
        ("header length u64::MAX", write("huge", &header_huge)),
        ("other model", other_path),
        ("other dtype", f64_path),
        ("a directory", dir.clone()),
    ];
    for (name, path) in &cases {
        let e = load_weights(&target, path).expect_err(name);
        assert!(
            matches!(e, LayerError::Io { .. } | LayerError::SetWeights { .. }),
            "{name}: {e:?}"
        );
        assert_eq!(var_bits(&target.weights()), before, "{name}");
    }
    load_weights(&target, &good).unwrap();
    assert_eq!(var_bits(&target.weights()), var_bits(&model.weights()));
    std::fs::remove_dir_all(&dir).ok();
}

// ------------------------------------------------------------- fuzz

/// Mutations of a valid weights file: byte flips, truncations, insertions,
/// header-length edits. Each load is `Ok` (and then the weights are the
/// file's) or a typed error leaving the weights as they were; never a panic.
#[test]
fn fuzz_load_weights() {
    let dir = std::env::temp_dir().join(format!("rime_fuzz_weights_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = weights_model();
    let good = dir.join("good.safetensors");
    save_weights(&model, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let target = weights_model();
    let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
    let path = dir.join("mutant.safetensors");
    for i in 0..1500 {
        let mut m = bytes.clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..5) {
                0 => {
                    let k = rng.random_range(0..m.len());
                    m[k] ^= 1 << rng.random_range(0..8);
                }
                1 => m.truncate(rng.random_range(0..m.len())),
                2 => {
                    let k = rng.random_range(0..=m.len());
                    m.insert(k, rng.random());
                }
                3 if m.len() >= 8 => {
                    let len = u64::from_le_bytes(m[..8].try_into().unwrap());
                    let delta: i64 = rng.random_range(-16..16);
                    m[..8].copy_from_slice(&(len as i64 + delta).max(0).to_le_bytes());
                }
                _ => {
                    // a random byte inside the JSON header (shapes, offsets)
                    let end = (8 + 200).min(m.len());
                    if end > 8 {
                        let k = rng.random_range(8..end);
                        m[k] = b"0123456789[],:\"FB"[rng.random_range(0..17)];
                    }
                }
            }
        }
        std::fs::write(&path, &m).unwrap();
        let before = var_bits(&target.weights());
        let r = catch_unwind(AssertUnwindSafe(|| load_weights(&target, &path)));
        match r {
            Err(_) => panic!("mutant {i} panicked"),
            Ok(Ok(())) => {}
            Ok(Err(_)) => assert_eq!(var_bits(&target.weights()), before, "mutant {i}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Values a fuzzed config field takes: sizes at and past every limit,
/// negative, fractional, and wrong types.
fn weird_value(rng: &mut impl Rng) -> Value {
    let choices = [
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(0.5),
        json!(1.0),
        json!(-0.5),
        json!(1e308),
        json!(-1e308),
        json!(1u64 << 32),
        json!(1u64 << 48),
        json!((1u64 << 48) + 1),
        json!(4611686018427387905u64),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(null),
        json!(true),
        json!("x"),
        json!([]),
        json!([1, -1]),
        json!([1u64 << 40, 1u64 << 40]),
        json!({}),
    ];
    choices[rng.random_range(0..choices.len())].clone()
}

/// Replaces one random leaf (or object entry) of `v` by a weird value.
fn mutate(v: &mut Value, rng: &mut impl Rng) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = &keys[rng.random_range(0..keys.len())];
            let child = map.get_mut(k).unwrap();
            if rng.random_range(0..3) == 0 {
                *child = weird_value(rng);
            } else {
                mutate(child, rng);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let k = rng.random_range(0..items.len());
            mutate(&mut items[k], rng);
        }
        _ => *v = weird_value(rng),
    }
}

/// Mutated configs of every built-in layer and of a Sequential model: each
/// `layer_from_config` (and a call on a small batch) is `Ok` or a typed
/// error, never a panic or an abort.
#[test]
fn fuzz_layers_and_models_from_configs() {
    let seeds: Vec<LayerConfig> = {
        let layers: Vec<LayerRef<f32>> = vec![
            std::sync::Arc::new(Dense::new(3)),
            std::sync::Arc::new(Embedding::new(6, 2)),
            std::sync::Arc::new(BatchNormalization::new()),
            std::sync::Arc::new(LayerNormalization::new()),
            std::sync::Arc::new(Dropout::new(0.25)),
            std::sync::Arc::new(Reshape::new(vec![2, -1])),
            std::sync::Arc::new(Flatten::new()),
            std::sync::Arc::new(Concatenate::new()),
            std::sync::Arc::new(Add::new()),
        ];
        let mut s: Vec<LayerConfig> = layers.iter().map(|l| LayerConfig::of(&**l)).collect();
        let model = Sequential::<f32>::new()
            .add(Dense::new(4))
            .add(Dropout::new(0.5))
            .add(Dense::new(2))
            .with_input_shape([4])
            .unwrap();
        s.push(LayerConfig::of(&model));
        s
    };
    let mut rng = rand_pcg::Pcg64::seed_from_u64(12);
    let x = Tensor::<f32>::ones([2, 4]).unwrap();
    let mut built = 0;
    for i in 0..3000 {
        let mut cfg = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..3) {
            mutate(&mut cfg.config, &mut rng);
        }
        let r = catch_unwind(AssertUnwindSafe(|| {
            let layer = layer_from_config::<f32>(&cfg)?;
            layer.call(&x, true)?;
            Ok::<_, LayerError>(())
        }));
        match r {
            Err(_) => panic!("config {i} panicked: {}", cfg.config),
            Ok(Ok(())) => built += 1,
            Ok(Err(e)) => assert!(!e.to_string().is_empty()),
        }
    }
    // the mutations leave some configs valid: the loop exercises both paths
    assert!(built > 100, "{built}");
}
