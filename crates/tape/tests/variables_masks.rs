//! `Variable` (a shared, shape-checked, `Send + Sync` handle) and
//! `TrainableMask` (which elements may train): how masks resolve, and that
//! `gradient` is exactly 0 at frozen elements and unchanged elsewhere, on
//! the mask-aware matmul path and on every other path.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::t;
use rime_tape::{Error, GradientTape, MaskStructure, SourceRef, TrainableMask, Variable};
use rime_tensor::{Shape, Tensor};

type R = rime_tape::Result<()>;

// Variables are Send + Sync: checked at compile time.
const _: fn() = || {
    fn send_sync<X: Send + Sync>() {}
    send_sync::<Variable<f32>>();
    send_sync::<Variable<f64>>();
    send_sync::<TrainableMask>();
    send_sync::<rime_tape::ResolvedMask>();
};

fn iota(shape: &[usize], scale: f64) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|i| ((i as f64 + 1.0) * scale).sin()).collect(),
        shape,
    )
    .unwrap()
}

// ---- Variable ------------------------------------------------------------------

#[test]
fn a_variable_is_a_shared_handle() -> R {
    let a = Variable::new("w", t(&[1.0, 2.0], &[2]));
    let b = a.clone();
    assert!(a.ptr_eq(&b) && a == b && a.id() == b.id());
    b.assign(&t(&[5.0, 6.0], &[2]))?;
    assert_eq!(a.to_vec(), vec![5.0, 6.0]);
    // same name, another variable
    let c = Variable::new("w", t(&[5.0, 6.0], &[2]));
    assert!(a != c && a.id() != c.id());
    #[allow(clippy::mutable_key_type)] // hashed by identity, which never changes
    let set: HashSet<Variable<f64>> = [a.clone(), b.clone(), c.clone()].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert_eq!(a.name(), "w");
    assert_eq!(a.shape(), Shape::from([2]));
    assert_eq!((a.len(), a.is_empty()), (2, false));
    // a tape sees both handles as one variable
    let tape = GradientTape::new();
    let y = a.value().mul(&b.value())?.sum_all(); // Σ w²
    let g = tape.gradient(&y, &[&c, &b])?;
    assert!(g[0].is_none());
    assert_eq!(g[1].as_ref().unwrap().to_vec(), vec![10.0, 12.0]);
    assert!(format!("{a:?}").contains("\"w\""));
    Ok(())
}

#[test]
fn assign_add_sub_are_shape_checked() -> R {
    let v = Variable::new("kernel", t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    v.assign_add(&t(&[0.5; 4], &[2, 2]))?;
    assert_eq!(v.to_vec(), vec![1.5, 2.5, 3.5, 4.5]);
    v.assign_sub(&t(&[1.0, 0.0, 1.0, 0.0], &[2, 2]))?;
    assert_eq!(v.to_vec(), vec![0.5, 2.5, 2.5, 4.5]);
    let before = v.to_vec();
    let bad = [
        v.assign(&t(&[0.0; 4], &[4])),
        v.assign(&t(&[0.0; 2], &[1, 2])),
        v.assign_add(&t(&[0.0; 4], &[4, 1])),
        v.assign_sub(&t(&[1.0], &[])), // no broadcasting either
    ];
    for e in bad {
        match e {
            Err(Error::AssignShape {
                variable,
                expected,
                got,
            }) => {
                assert_eq!(variable, "kernel");
                assert_eq!(expected, Shape::from([2, 2]));
                assert_ne!(got, expected);
            }
            other => panic!("expected AssignShape, got {other:?}"),
        }
        assert_eq!(v.to_vec(), before, "a failed assignment changes nothing");
        assert_eq!(v.shape(), Shape::from([2, 2]));
    }
    // the error message names the variable and both shapes
    let msg = v.assign(&t(&[0.0; 3], &[3])).unwrap_err().to_string();
    assert!(
        msg.contains("kernel") && msg.contains("[3]") && msg.contains("[2, 2]"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn update_exclusive_writes_in_place_and_update_keeps_a_snapshot() -> R {
    let v = Variable::new("v", t(&[1.0, 2.0, 3.0], &[3]));
    let buffer = |v: &Variable<f64>| v.value_untracked().as_slice().as_ptr();
    let before = buffer(&v);
    // nothing else holds the buffer: updated where it is
    v.update_exclusive(|w| w.iter_mut().for_each(|x| *x *= 2.0))?;
    assert_eq!(v.to_vec(), vec![2.0, 4.0, 6.0]);
    assert_eq!(buffer(&v), before, "update_exclusive copied the buffer");
    // a read taken earlier keeps its values (copy-on-write)
    let read = v.value_untracked();
    v.update_exclusive(|w| w[0] = 0.0)?;
    assert_eq!(read.to_vec(), vec![2.0, 4.0, 6.0]);
    assert_eq!(v.to_vec(), vec![0.0, 4.0, 6.0]);
    // update: reads inside see the value before the update
    let seen = v.update(|w| {
        w[1] = 9.0;
        v.to_vec()
    })?;
    assert_eq!(seen, vec![0.0, 4.0, 6.0]);
    assert_eq!(v.to_vec(), vec![0.0, 9.0, 6.0]);
    // nested writes are typed errors in both
    let err = v.update_exclusive(|_| v.update_exclusive(|_| ()))?;
    assert!(matches!(err, Err(rime_tape::Error::ReentrantUpdate { .. })));
    Ok(())
}

#[test]
#[should_panic(expected = "read inside its own update_exclusive closure")]
fn reading_inside_update_exclusive_panics_like_a_refcell() {
    let v = Variable::new("v", t(&[1.0], &[1]));
    let _ = v.update_exclusive(|_| v.to_vec());
}

#[test]
fn assignment_keeps_earlier_reads_and_detaches_the_value() -> R {
    let v = Variable::new("v", t(&[1.0, 1.0], &[2]));
    let read = v.value();
    v.assign_add(&t(&[1.0, 2.0], &[2]))?;
    v.update(|w| w[0] *= 10.0).unwrap();
    assert_eq!(read.to_vec(), vec![1.0, 1.0]);
    assert_eq!(v.to_vec(), vec![20.0, 3.0]);
    // assigning a recorded tensor does not connect the variable to its history
    let x = t(&[2.0, 3.0], &[2]);
    let tape = GradientTape::persistent();
    tape.watch(&x);
    let y = x.square();
    v.assign(&y)?;
    let z = v.value().sum_all();
    let g = tape.gradient(&z, &[&x])?;
    assert!(g[0].is_none(), "the variable's value is not y itself");
    assert_eq!(
        tape.gradient(&z, &[&v])?[0].as_ref().unwrap().to_vec(),
        vec![1.0, 1.0]
    );
    Ok(())
}

#[test]
fn variables_are_shared_across_threads() {
    let v = Variable::new("counter", Tensor::<f32>::zeros([3]).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let v = v.clone();
            std::thread::spawn(move || {
                for _ in 0..250 {
                    v.assign_add(&Tensor::ones([3]).unwrap()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(v.to_vec(), vec![1000.0; 3]);
}

#[test]
fn trainable_flag() {
    let v = Variable::new("a", Tensor::<f32>::zeros([1]).unwrap());
    assert!(v.trainable());
    let w = v.clone();
    w.set_trainable(false);
    assert!(!v.trainable(), "the flag is shared by handles");
    v.set_trainable(true);
    assert!(w.trainable());
    assert!(!Variable::non_trainable("b", Tensor::<f32>::zeros([1]).unwrap()).trainable());
}

// ---- TrainableMask: resolving ------------------------------------------------------

fn bits(m: &TrainableMask, shape: &[usize]) -> Vec<bool> {
    m.resolve("m", &Shape::from(shape)).unwrap().bits().to_vec()
}

fn from_pred(shape: &[usize], f: impl Fn(&[usize]) -> bool) -> Vec<bool> {
    let s = Shape::from(shape);
    let strides = s.strides();
    (0..s.numel())
        .map(|i| {
            let ix: Vec<usize> = strides
                .iter()
                .zip(shape)
                .map(|(st, d)| (i / st) % d)
                .collect();
            f(&ix)
        })
        .collect()
}

#[test]
fn masks_resolve_to_the_described_elements() -> R {
    let s = [4, 3];
    assert_eq!(
        bits(&TrainableMask::rows([1..2, 3..4]), &s),
        from_pred(&s, |i| i[0] == 1 || i[0] == 3)
    );
    assert_eq!(
        bits(&TrainableMask::cols(0..2), &s),
        from_pred(&s, |i| i[1] < 2)
    );
    assert_eq!(
        bits(&TrainableMask::freeze_rows(0..1), &s),
        from_pred(&s, |i| i[0] != 0)
    );
    assert_eq!(
        bits(&TrainableMask::freeze_cols(2..3), &s),
        from_pred(&s, |i| i[1] != 2)
    );
    // any axis, also negative, of a 3-D tensor
    let s3 = [2, 4, 3];
    assert_eq!(
        bits(&TrainableMask::axis_ranges(1, 1..3), &s3),
        from_pred(&s3, |i| (1..3).contains(&i[1]))
    );
    assert_eq!(
        bits(&TrainableMask::axis_ranges(-1, 2..3), &s3),
        from_pred(&s3, |i| i[2] == 2)
    );
    assert_eq!(
        bits(&TrainableMask::axis_ranges(-3, 1..2), &s3),
        from_pred(&s3, |i| i[0] == 1)
    );
    // empty and overlapping ranges
    assert_eq!(bits(&TrainableMask::rows(2..2), &s), vec![false; 12]);
    assert_eq!(
        bits(&TrainableMask::rows([0..2, 1..3]), &s),
        from_pred(&s, |i| i[0] < 3)
    );
    // element lists (repeats allowed)
    let e = TrainableMask::elements([vec![0, 1], vec![3, 2], vec![0, 1]]);
    assert_eq!(bits(&e, &s), from_pred(&s, |i| i == [0, 1] || i == [3, 2]));
    // 0/1 tensors of either dtype and bool vectors
    let pattern = from_pred(&s, |i| (i[0] + i[1]) % 2 == 0);
    let as_f32: Vec<f32> = pattern.iter().map(|&b| b as u8 as f32).collect();
    let as_f64: Vec<f64> = pattern.iter().map(|&b| b as u8 as f64).collect();
    assert_eq!(
        bits(
            &TrainableMask::from_tensor(&Tensor::from_vec(as_f32, s)?)?,
            &s
        ),
        pattern
    );
    assert_eq!(
        bits(
            &TrainableMask::from_tensor(&Tensor::from_vec(as_f64, s)?)?,
            &s
        ),
        pattern
    );
    assert_eq!(
        bits(&TrainableMask::from_bools(s, pattern.clone()), &s),
        pattern
    );
    // a predicate on the multi-index
    let lower = TrainableMask::predicate(|ix| ix[0] >= ix[1]);
    assert_eq!(bits(&lower, &s), from_pred(&s, |i| i[0] >= i[1]));
    // all / none
    assert_eq!(bits(&TrainableMask::all(), &s), vec![true; 12]);
    assert_eq!(bits(&TrainableMask::none(), &s), vec![false; 12]);
    // rank 0
    assert_eq!(bits(&TrainableMask::all(), &[]), vec![true]);
    assert_eq!(
        bits(&TrainableMask::predicate(|ix| ix.is_empty()), &[]),
        vec![true]
    );
    Ok(())
}

#[test]
fn mask_algebra() {
    let s = [4, 3];
    let r = TrainableMask::rows(0..2);
    let c = TrainableMask::cols(1..2);
    let p = TrainableMask::predicate(|i| i[0] == 3 && i[1] == 0);
    assert_eq!(
        bits(&r.clone().union(c.clone()), &s),
        from_pred(&s, |i| i[0] < 2 || i[1] == 1)
    );
    assert_eq!(
        bits(&r.clone().intersection(c.clone()), &s),
        from_pred(&s, |i| i[0] < 2 && i[1] == 1)
    );
    assert_eq!(
        bits(&r.clone().complement(), &s),
        from_pred(&s, |i| i[0] >= 2)
    );
    let m = r
        .clone()
        .union(p.clone())
        .intersection(c.clone().complement());
    assert_eq!(
        bits(&m, &s),
        from_pred(&s, |i| (i[0] < 2 || (i[0] == 3 && i[1] == 0)) && i[1] != 1)
    );
    // De Morgan
    let lhs = r.clone().union(c.clone()).complement();
    let rhs = r.complement().intersection(c.complement());
    assert_eq!(bits(&lhs, &s), bits(&rhs, &s));
    assert!(format!("{m:?}").starts_with("TrainableMask("));
}

#[test]
fn resolved_masks_for_optimizers() -> R {
    let r = TrainableMask::rows(1..2)
        .union(TrainableMask::elements([vec![3, 0]]))
        .resolve("w", &Shape::from([4, 3]))?;
    assert_eq!(r.runs(), &[3..6, 9..10]);
    assert_eq!(r.frozen_runs(), &[0..3, 6..9, 10..12]);
    assert_eq!(r.trainable_count(), 4);
    assert!(r.is_trainable(4) && !r.is_trainable(10));
    assert_eq!(r.structure(), &MaskStructure::Irregular);
    assert_eq!(r.shape(), &Shape::from([4, 3]));
    let mut vals: Vec<f32> = (0..12).map(|i| i as f32 + 1.0).collect();
    r.zero_frozen(&mut vals);
    let want: Vec<f32> = (0..12)
        .map(|i| {
            if (3..6).contains(&i) || i == 9 {
                i as f32 + 1.0
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(vals, want);
    assert_eq!(
        r.to_tensor::<f64>().to_vec(),
        want.iter()
            .map(|&v| if v != 0.0 { 1.0 } else { 0.0 })
            .collect::<Vec<_>>()
    );
    // structure of row and column masks, and of combinations that stay rows
    let st = |m: TrainableMask| {
        m.resolve("w", &Shape::from([5, 4]))
            .unwrap()
            .structure()
            .clone()
    };
    assert_eq!(
        st(TrainableMask::rows([0..1, 3..5])),
        MaskStructure::Rows(vec![0..1, 3..5])
    );
    assert_eq!(
        st(TrainableMask::cols(2..4)),
        MaskStructure::Cols(std::iter::once(2..4).collect())
    );
    assert_eq!(
        st(TrainableMask::predicate(|i| i[0] % 2 == 0)),
        MaskStructure::Rows(vec![0..1, 2..3, 4..5])
    );
    assert_eq!(st(TrainableMask::all()), MaskStructure::All);
    assert_eq!(st(TrainableMask::none()), MaskStructure::Nothing);
    assert_eq!(
        st(TrainableMask::rows(0..2).intersection(TrainableMask::cols(1..2))),
        MaskStructure::Irregular
    );
    Ok(())
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // a reversed range is one of the bad inputs
fn masks_that_do_not_fit_are_typed_errors_and_change_nothing() -> R {
    let w = Variable::new("kernel", Tensor::<f32>::zeros([3, 2]).unwrap());
    w.set_mask(Some(TrainableMask::rows(0..1)))?;
    let before = w.mask();
    let bad = [
        TrainableMask::rows(0..4),
        TrainableMask::rows(2..1),
        TrainableMask::cols(1..3),
        TrainableMask::axis_ranges(2, 0..1),
        TrainableMask::axis_ranges(-3, 0..1),
        TrainableMask::elements([vec![0, 2]]),
        TrainableMask::elements([vec![0, 0, 0]]),
        TrainableMask::from_bools([2, 3], vec![true; 6]),
        TrainableMask::from_bools([6], vec![true; 6]),
        TrainableMask::all().union(TrainableMask::rows(5..6)),
    ];
    for m in bad {
        let desc = format!("{m:?}");
        match w.set_mask(Some(m)) {
            Err(Error::Mask { target, shape, msg }) => {
                assert_eq!(target, "kernel");
                assert_eq!(shape, Shape::from([3, 2]));
                assert!(!msg.is_empty());
            }
            other => panic!("{desc}: expected a mask error, got {other:?}"),
        }
        assert_eq!(w.mask(), before, "a rejected mask leaves the old one");
    }
    // a bool vector of the wrong length for its own shape is caught too
    assert!(matches!(
        TrainableMask::from_bools([3, 2], vec![true; 5]).resolve("k", &Shape::from([3, 2])),
        Err(Error::Mask { .. })
    ));
    // a tensor that is not 0/1
    assert!(matches!(
        TrainableMask::from_tensor(&Tensor::vector(vec![1.0f32, 2.0])),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        TrainableMask::from_tensor(&Tensor::vector(vec![f64::NAN])),
        Err(Error::InvalidArgument { .. })
    ));
    w.set_mask(None)?;
    assert!(w.mask().is_none());
    Ok(())
}

// ---- gradients of masked variables -------------------------------------------------

/// Gradient of `f` with respect to `w` (masked as it is) and, on a
/// separate tape, with respect to an unmasked copy of the same value.
fn masked_and_full(
    w: &Variable<f64>,
    f: impl Fn(&Tensor<f64>) -> Tensor<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let tape = GradientTape::new();
    let y = f(&w.value());
    let g = tape.gradient(&y, &[w]).unwrap().remove(0).unwrap().to_vec();
    let copy = Variable::new("copy", w.value_untracked());
    let tape = GradientTape::new();
    let y = f(&copy.value());
    let full = tape
        .gradient(&y, &[&copy])
        .unwrap()
        .remove(0)
        .unwrap()
        .to_vec();
    (g, full)
}

/// Frozen elements exactly 0.0 (bitwise +0 or -0 is not enough: exactly 0),
/// trainable ones equal to the unmasked gradient within `tol`.
fn assert_masked(g: &[f64], full: &[f64], mask: &rime_tape::ResolvedMask, tol: f64, what: &str) {
    for i in 0..g.len() {
        if mask.is_trainable(i) {
            assert!(
                (g[i] - full[i]).abs() <= tol * (1.0 + full[i].abs()),
                "{what}: trainable element {i}: {} vs {}",
                g[i],
                full[i]
            );
        } else {
            assert_eq!(g[i], 0.0, "{what}: frozen element {i}");
        }
    }
    assert!(
        full.iter()
            .enumerate()
            .any(|(i, v)| !mask.is_trainable(i) && *v != 0.0),
        "{what}: the test must freeze elements whose gradient is not 0"
    );
}

type Use<'a> = Box<dyn Fn(&Tensor<f64>) -> Tensor<f64> + 'a>;

fn masks_for(shape: &[usize]) -> Vec<(&'static str, TrainableMask)> {
    let (r, c) = (shape[0], shape[1]);
    vec![
        ("rows", TrainableMask::rows([1..2, r - 1..r])),
        ("freeze rows", TrainableMask::freeze_rows(0..r / 2)),
        ("cols", TrainableMask::cols([0..1, c - 1..c])),
        (
            "elements",
            TrainableMask::elements([vec![0, 0], vec![r - 1, 1], vec![1, c - 1]]),
        ),
        (
            "checkerboard",
            TrainableMask::predicate(|i| (i[0] + i[1]) % 2 == 1),
        ),
        (
            "rows ∩ cols",
            TrainableMask::rows(0..r - 1).intersection(TrainableMask::cols(1..c)),
        ),
        (
            "bools",
            TrainableMask::from_bools(shape, (0..r * c).map(|i| i % 3 != 0).collect()),
        ),
        ("nothing", TrainableMask::none()),
    ]
}

#[test]
fn masked_gradients_are_exactly_zero_at_frozen_elements() -> R {
    let x = iota(&[6, 5], 0.37);
    let shape = [5, 4];
    for (name, mask) in masks_for(&shape) {
        let w = Variable::new("w", iota(&shape, 0.91));
        w.set_mask(Some(mask))?;
        let m = w.mask().unwrap();
        let uses: [(&str, Use); 5] = [
            ("x·w", Box::new(|w| x.matmul(w).unwrap().tanh().sum_all())),
            (
                "(x·w)ᵀ via matmul_t",
                Box::new(|w| w.matmul_t(&x, true, true).unwrap().square().sum_all()),
            ),
            (
                "wᵀ·… as left operand",
                Box::new(|w| {
                    w.t()
                        .unwrap()
                        .matmul(&x.t().unwrap())
                        .unwrap()
                        .sin()
                        .sum_all()
                }),
            ),
            (
                "elementwise",
                Box::new(|w| w.square().mul(&w.sin()).unwrap().sum_all()),
            ),
            (
                "matmul and elementwise",
                Box::new(|w| {
                    x.matmul(w)
                        .unwrap()
                        .sum_all()
                        .add(&w.exp().sum_all())
                        .unwrap()
                }),
            ),
        ];
        for (use_name, f) in uses {
            let (g, full) = masked_and_full(&w, f);
            assert_masked(&g, &full, &m, 1e-12, &format!("{name} / {use_name}"));
        }
    }
    Ok(())
}

#[test]
fn mask_aware_matmul_gives_the_full_products_trainable_block() -> R {
    // dW = xᵀ G for y = x W, compared with a naive product
    let (b, i, o) = (7, 6, 5);
    let x = iota(&[b, i], 0.53);
    let seed = iota(&[b, o], 0.29);
    let naive: Vec<f64> = (0..i * o)
        .map(|e| {
            let (r, c) = (e / o, e % o);
            (0..b)
                .map(|k| x.as_slice()[k * i + r] * seed.as_slice()[k * o + c])
                .sum()
        })
        .collect();
    for (name, mask) in [
        ("rows", TrainableMask::rows([1..3, 5..6])),
        ("cols", TrainableMask::cols([0..2, 4..5])),
        ("freeze_rows", TrainableMask::freeze_rows(0..4)),
    ] {
        let w = Variable::new("w", iota(&[i, o], 0.77));
        w.set_mask(Some(mask))?;
        let m = w.mask().unwrap();
        assert!(matches!(
            m.structure(),
            MaskStructure::Rows(_) | MaskStructure::Cols(_)
        ));
        let tape = GradientTape::new();
        let y = x.matmul(&w.value())?;
        let g = tape
            .gradient_with(
                &[&y],
                &[&w],
                rime_tape::GradientOptions {
                    output_gradients: Some(std::slice::from_ref(&seed)),
                    unconnected: rime_tape::UnconnectedGradients::None,
                },
            )?
            .remove(0)
            .unwrap()
            .to_vec();
        assert_masked(&g, &naive, &m, 1e-13, name);
    }
    // f32 as well
    let w = Variable::new("w32", Tensor::<f32>::ones([4, 3]).unwrap());
    w.set_mask(Some(TrainableMask::rows(2..4)))?;
    let x = Tensor::<f32>::from_vec((0..8).map(|v| v as f32).collect(), [2, 4])?;
    let tape = GradientTape::new();
    let y = x.matmul(&w.value())?.sum_all();
    let g = tape.gradient(&y, &[&w])?.remove(0).unwrap();
    // column sums of x: [4, 6, 8, 10], rows 0-1 frozen
    assert_eq!(
        g.to_vec(),
        vec![
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 8.0, 8.0, 10.0, 10.0, 10.0
        ]
    );
    Ok(())
}

#[test]
fn an_explicit_mask_overrides_the_variables_own() -> R {
    let w = Variable::new("w", t(&[1.0, 2.0, 3.0], &[3]));
    w.set_mask(Some(TrainableMask::rows(0..1)))?;
    let other = Arc::new(TrainableMask::rows(1..3).resolve("w", &w.shape())?);
    let tape = GradientTape::persistent();
    let y = w.value().square().sum_all();
    let own = tape.gradient(&y, &[&w])?.remove(0).unwrap();
    assert_eq!(own.to_vec(), vec![2.0, 0.0, 0.0]);
    let g = tape.gradient(&y, &[SourceRef::variable_with_mask(&w, Some(other))])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![0.0, 4.0, 6.0]);
    let g = tape.gradient(&y, &[SourceRef::variable_with_mask(&w, None)])?;
    assert_eq!(g[0].as_ref().unwrap().to_vec(), vec![2.0, 4.0, 6.0]);
    Ok(())
}

#[test]
fn masks_hold_under_nested_tapes() -> R {
    // the gradient penalty of a masked weight: the inner gradient and the
    // outer one are both 0 at frozen elements
    let x = iota(&[4, 3], 0.4);
    for (name, mask) in [
        ("rows", TrainableMask::rows(1..2)),
        (
            "irregular",
            TrainableMask::elements([vec![0, 0], vec![2, 1]]),
        ),
    ] {
        let w = Variable::new("w", iota(&[3, 2], 1.3));
        w.set_mask(Some(mask))?;
        let m = w.mask().unwrap();
        let outer = GradientTape::new();
        let inner = GradientTape::new();
        let y = x.matmul(&w.value())?.tanh().sum_all();
        let gw = inner.gradient(&y, &[&w])?.remove(0).unwrap();
        drop(inner);
        let pen = gw.square().sum_all();
        let d = outer.gradient(&pen, &[&w])?.remove(0).unwrap().to_vec();
        // the same with an unmasked copy
        let c = Variable::new("c", w.value_untracked());
        let outer = GradientTape::new();
        let inner = GradientTape::new();
        let y = x.matmul(&c.value())?.tanh().sum_all();
        let gc = inner.gradient(&y, &[&c])?.remove(0).unwrap();
        drop(inner);
        let d_full_inner = gc.to_vec();
        // Σ over trainable elements of gc² only, differentiated: the frozen
        // elements' gradients do not enter the penalty
        let pen_c = gc.mul(&m.to_tensor())?.square().sum_all();
        let d_full = outer.gradient(&pen_c, &[&c])?.remove(0).unwrap().to_vec();
        assert_masked(
            &gw.to_vec(),
            &d_full_inner,
            &m,
            1e-13,
            &format!("{name}: inner"),
        );
        assert_masked(&d, &d_full, &m, 1e-12, &format!("{name}: outer"));
    }
    Ok(())
}

#[test]
fn a_mask_set_after_recording_applies_to_the_gradient() -> R {
    let w = Variable::new("w", t(&[1.0, 2.0], &[2]));
    let tape = GradientTape::persistent();
    let y = w.value().square().sum_all();
    w.set_mask(Some(TrainableMask::rows(1..2)))?;
    assert_eq!(
        tape.gradient(&y, &[&w])?[0].as_ref().unwrap().to_vec(),
        vec![0.0, 4.0]
    );
    w.set_mask(None)?;
    assert_eq!(
        tape.gradient(&y, &[&w])?[0].as_ref().unwrap().to_vec(),
        vec![2.0, 4.0]
    );
    Ok(())
}

#[test]
fn large_irregular_masks() -> R {
    // many short frozen runs take the per-element path of zero_frozen
    let shape = [48, 40];
    let w = Variable::new("w", iota(&shape, 0.013));
    w.set_mask(Some(TrainableMask::predicate(|i| {
        (i[0] * 7 + i[1] * 13) % 10 == 0
    })))?;
    let m = w.mask().unwrap();
    assert!(m.frozen_runs().len() > 64);
    let x = iota(&[5, 48], 0.21);
    let (g, full) = masked_and_full(&w, |w| x.matmul(w).unwrap().tanh().sum_all());
    assert_masked(&g, &full, &m, 1e-12, "irregular 48x40");
    let mut ones = vec![1.0f64; 48 * 40];
    m.zero_frozen(&mut ones);
    for (i, v) in ones.iter().enumerate() {
        assert_eq!(*v, if m.is_trainable(i) { 1.0 } else { 0.0 });
    }
    // a user's seed is never written to: masking copies a shared buffer
    let tape = GradientTape::new();
    let y = w.value(); // the seed itself reaches the variable
    let seed = Tensor::<f64>::ones(shape).unwrap();
    let g = tape
        .gradient_with(
            &[&y],
            &[&w],
            rime_tape::GradientOptions {
                output_gradients: Some(std::slice::from_ref(&seed)),
                unconnected: rime_tape::UnconnectedGradients::None,
            },
        )?
        .remove(0)
        .unwrap();
    assert_eq!(seed.to_vec(), vec![1.0; 48 * 40]);
    assert_eq!(g.to_vec(), m.to_tensor::<f64>().to_vec());
    Ok(())
}
