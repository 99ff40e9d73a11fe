//! Property tests: the tape's gradient of every differentiable rime-tensor
//! op agrees with central finite differences (`gradcheck`, f64) on random
//! shapes and values. Inputs are built away from the points where an op is
//! not differentiable (ties, kinks), so the finite difference is the true
//! derivative.

mod common;

use common::*;
use proptest::prelude::*;
use rime_tape::{GradcheckError, GradcheckOptions, GradientTape, custom_gradient, gradcheck};
use rime_tensor::Tensor;

type Op1 = fn(&Tensor<f64>) -> rime_tape::Result<Tensor<f64>>;
type BoxedOp = Box<dyn Fn(&Tensor<f64>) -> rime_tape::Result<Tensor<f64>>>;

/// Where a unary op's inputs are drawn from.
#[derive(Clone, Copy, Debug)]
enum Domain {
    Any,
    Positive,
    AwayFromZero,
    /// away from the clamp bounds -0.5 and 0.7
    Clamp,
}

fn into_domain(raw: &[f64], d: Domain) -> Vec<f64> {
    raw.iter()
        .map(|&r| match d {
            Domain::Any => 2.0 * r,
            Domain::Positive => 1.25 + 0.75 * r,
            Domain::AwayFromZero => r.signum() * (0.2 + 1.8 * r.abs()),
            Domain::Clamp => {
                let v = 1.5 * r;
                if (v + 0.5).abs() < 0.05 || (v - 0.7).abs() < 0.05 {
                    v + 0.1
                } else {
                    v
                }
            }
        })
        .collect()
}

const UNARY: &[(&str, Op1, Domain)] = &[
    ("neg", |x| Ok(x.neg()), Domain::Any),
    ("abs", |x| Ok(x.abs()), Domain::AwayFromZero),
    ("exp", |x| Ok(x.exp()), Domain::Any),
    ("ln", |x| Ok(x.ln()), Domain::Positive),
    ("sqrt", |x| Ok(x.sqrt()), Domain::Positive),
    ("square", |x| Ok(x.square()), Domain::Any),
    ("recip", |x| Ok(x.recip()), Domain::AwayFromZero),
    ("sin", |x| Ok(x.sin()), Domain::Any),
    ("cos", |x| Ok(x.cos()), Domain::Any),
    ("tanh", |x| Ok(x.tanh()), Domain::Any),
    ("sigmoid", |x| Ok(x.sigmoid()), Domain::Any),
    ("relu", |x| Ok(x.relu()), Domain::AwayFromZero),
    (
        "leaky_relu",
        |x| Ok(x.leaky_relu(0.2)),
        Domain::AwayFromZero,
    ),
    ("gelu", |x| Ok(x.gelu()), Domain::Any),
    ("erf", |x| Ok(x.erf()), Domain::Any),
    ("softplus", |x| Ok(x.softplus()), Domain::Any),
    ("clamp", |x| Ok(x.clamp(-0.5, 0.7)?), Domain::Clamp),
    ("sign", |x| Ok(x.sign()), Domain::AwayFromZero),
];

/// The unary op applied twice-differentiably: `x ↦ ∂/∂x <op(x), ct>`,
/// computed with an inner tape inside the function gradcheck differentiates.
fn inner_gradient(op: Op1, x: &Tensor<f64>, ct: &Tensor<f64>) -> rime_tape::Result<Tensor<f64>> {
    let tape = GradientTape::new();
    tape.watch(x);
    let y = op(x)?;
    let g = tape.gradient_with(
        &[&y],
        &[x],
        rime_tape::GradientOptions {
            output_gradients: Some(std::slice::from_ref(ct)),
            unconnected: rime_tape::UnconnectedGradients::Zero,
        },
    )?;
    Ok(g.into_iter().next().flatten().expect("zero-filled"))
}

fn raw(shape: Vec<usize>) -> BoxedStrategy<(Vec<usize>, Vec<f64>)> {
    let n: usize = shape.iter().product();
    (Just(shape), prop::collection::vec(-1.0..1.0f64, n)).boxed()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn unary_ops((s, r) in shape(0..=3, 4).prop_flat_map(raw)) {
        for &(name, op, domain) in UNARY {
            let x = t(&into_domain(&r, domain), &s);
            check(name, |v| op(&v[0]), &[x])?;
        }
    }

    /// Second derivatives of every unary op: the inner tape's gradient rule
    /// is itself recorded by gradcheck's tape.
    #[test]
    fn unary_ops_second_order(
        (s, r) in shape(0..=2, 3).prop_flat_map(raw),
        seed in any::<u64>(),
    ) {
        let ct = Tensor::<f64>::rand_normal(s.clone(), 0.0, 1.0, &mut rime_tensor::seeded_rng(seed)).unwrap();
        for &(name, op, domain) in UNARY {
            let x = t(&into_domain(&r, domain), &s);
            let ct = ct.clone();
            check(&format!("d/dx grad {name}"), move |v| inner_gradient(op, &v[0], &ct), &[x])?;
        }
    }

    #[test]
    fn add_sub_mul_broadcast(
        (a, b) in broadcast_shapes(2, 3).prop_flat_map(|(_, s)| {
            (filled(s[0].clone(), -2.0, 2.0), filled(s[1].clone(), -2.0, 2.0))
        })
    ) {
        check("add", |v| Ok(v[0].add(&v[1])?), &[a.clone(), b.clone()])?;
        check("sub", |v| Ok(v[0].sub(&v[1])?), &[a.clone(), b.clone()])?;
        check("mul", |v| Ok(v[0].mul(&v[1])?), &[a.clone(), b.clone()])?;
        check("mul self", |v| Ok(v[0].mul(&v[0])?), &[a])?;
    }

    #[test]
    fn div_broadcast(
        (a, b) in broadcast_shapes(2, 3).prop_flat_map(|(_, s)| {
            (filled(s[0].clone(), -2.0, 2.0), away_from_zero(s[1].clone(), 0.5, 2.0))
        })
    ) {
        check("div", |v| Ok(v[0].div(&v[1])?), &[a, b])?;
    }

    #[test]
    fn pow_broadcast(
        (a, b) in broadcast_shapes(2, 3).prop_flat_map(|(_, s)| {
            (filled(s[0].clone(), 0.5, 2.0), filled(s[1].clone(), -2.0, 2.0))
        })
    ) {
        check("pow", |v| Ok(v[0].pow(&v[1])?), &[a.clone(), b])?;
        check("powf", |v| Ok(v[0].powf(1.7)), &[a])?;
    }

    /// A negative base with a constant integer exponent: d/da = b a^(b-1).
    #[test]
    fn pow_negative_base_integer_exponent(
        a in shape(1..=2, 3).prop_flat_map(|s| away_from_zero(s, 0.5, 2.0)),
        k in 0i32..4,
    ) {
        let e = Tensor::scalar(k as f64);
        check("pow int", move |v| Ok(v[0].pow(&e)?), &[a])?;
    }

    #[test]
    fn maximum_minimum_broadcast(
        (a, b) in broadcast_shapes(2, 3).prop_flat_map(|(_, s)| {
            (grid(s[0].clone(), 0.0), grid(s[1].clone(), 0.125))
        })
    ) {
        check("maximum", |v| Ok(v[0].maximum(&v[1])?), &[a.clone(), b.clone()])?;
        check("minimum", |v| Ok(v[0].minimum(&v[1])?), &[a, b])?;
    }

    /// `relu_grad` (the gradient of `relu`, which its rule uses): linear in
    /// the gradient it routes, constant in the input; broadcast both ways.
    #[test]
    fn relu_grad_broadcast(
        (dy, x) in broadcast_shapes(2, 3).prop_flat_map(|(_, s)| {
            (grid(s[0].clone(), 0.0), grid(s[1].clone(), 0.125))
        })
    ) {
        let want = dy.mul(&x.gt_scalar(0.0)).unwrap();
        prop_assert_eq!(dy.relu_grad(&x).unwrap().to_vec(), want.to_vec());
        check("relu_grad", |v| Ok(v[0].relu_grad(&v[1])?.sin()), &[dy, x])?;
    }

    #[test]
    fn scalar_ops(x in shape(0..=3, 4).prop_flat_map(|s| grid(s, 0.125))) {
        check("add_scalar", |v| Ok(v[0].add_scalar(0.3).mul_scalar(-1.7)), std::slice::from_ref(&x))?;
        check("rsub/div", |v| Ok(v[0].rsub_scalar(2.0).div_scalar(0.7).sub_scalar(1.0)), std::slice::from_ref(&x))?;
        check("max/min scalar", |v| {
            Ok(v[0].maximum_scalar(-0.5).minimum_scalar(1.0).mul(&v[0])?)
        }, &[x])?;
    }

    #[test]
    fn select_broadcast(
        (c, a, b) in broadcast_shapes(3, 3).prop_flat_map(|(_, s)| {
            let n: usize = s[0].iter().product();
            let cs = s[0].clone();
            (
                prop::collection::vec(any::<bool>(), n)
                    .prop_map(move |bits| {
                        let v: Vec<f64> = bits.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                        t(&v, &cs)
                    }),
                filled(s[1].clone(), -2.0, 2.0),
                filled(s[2].clone(), -2.0, 2.0),
            )
        })
    ) {
        check("select", move |v| Ok(Tensor::select(&c, &v[0], &v[1])?.mul(&v[0])?), &[a, b])?;
    }

    #[test]
    fn reductions(
        (x, d, ax) in shape(0..=3, 4).prop_flat_map(|s| {
            let r = s.len();
            (filled(s.clone(), -2.0, 2.0), distinct(s), axes(r))
        }),
        keep in any::<bool>(),
    ) {
        let a = ax.clone();
        check("sum", move |v| Ok(v[0].sum(&a, keep)?), std::slice::from_ref(&x))?;
        let a = ax.clone();
        check("mean", move |v| Ok(v[0].mean(&a, keep)?), std::slice::from_ref(&x))?;
        let a = ax.clone();
        check("var", move |v| Ok(v[0].var(&a, keep)?), std::slice::from_ref(&x))?;
        let a = ax.clone();
        check("logsumexp", move |v| Ok(v[0].logsumexp(&a, keep)?), std::slice::from_ref(&x))?;
        let a = ax.clone();
        check("max", move |v| Ok(v[0].max(&a, keep)?), std::slice::from_ref(&d))?;
        let a = ax.clone();
        check("min", move |v| Ok(v[0].min(&a, keep)?), &[d])?;
        check("sum_all", |v| Ok(v[0].square().sum_all()), std::slice::from_ref(&x))?;
        check("mean_all", |v| Ok(v[0].exp().mean_all()), &[x])?;
    }

    #[test]
    fn softmax_family(
        (x, axis) in shape(1..=3, 4).prop_flat_map(|s| {
            let r = s.len() as isize;
            (filled(s, -3.0, 3.0), -r..r)
        })
    ) {
        check("softmax", move |v| Ok(v[0].softmax(axis)?), std::slice::from_ref(&x))?;
        check("log_softmax", move |v| Ok(v[0].log_softmax(axis)?), &[x])?;
    }

    #[test]
    fn sparse_softmax_cross_entropy(
        (x, labels) in shape(1..=3, 4).prop_flat_map(|s| {
            let c = *s.last().unwrap();
            let rows: usize = s[..s.len() - 1].iter().product();
            (filled(s, -3.0, 3.0), prop::collection::vec(0..c, rows))
        })
    ) {
        check("sparse_softmax_cross_entropy", move |v| Ok(v[0].sparse_softmax_cross_entropy(&labels)?), &[x])?;
    }

    #[test]
    fn softmax_cross_entropy(
        (x, p) in shape(1..=3, 4).prop_flat_map(|s| (filled(s.clone(), -3.0, 3.0), filled(s, 0.0, 1.0)))
    ) {
        check("softmax_cross_entropy", |v| Ok(v[0].softmax_cross_entropy(&v[1])?), &[x, p])?;
    }

    #[test]
    fn reshape_squeeze_unsqueeze_flatten(
        (x, ax, from) in shape(0..=3, 3).prop_flat_map(|s| {
            let r = s.len() as isize;
            let f = 0..=s.len();
            (filled(s, -2.0, 2.0), -(r + 1)..=r, f)
        })
    ) {
        let dims = x.dims().to_vec();
        let n = x.len();
        let rev: Vec<usize> = dims.iter().rev().copied().collect();
        check("reshape", move |v| Ok(v[0].reshape([n])?.reshape(rev.clone())?.sin()), std::slice::from_ref(&x))?;
        check("unsqueeze/squeeze", move |v| {
            let u = v[0].unsqueeze(ax)?;
            Ok(u.mul(&u)?.squeeze(&[ax])?.squeeze(&[])?)
        }, std::slice::from_ref(&x))?;
        check("flatten_from", move |v| Ok(v[0].flatten_from(from)?.tanh()), &[x])?;
    }

    #[test]
    fn permute_transpose(
        (x, perm, a, b) in shape(1..=4, 3).prop_flat_map(|s| {
            let r = s.len();
            let ri = r as isize;
            (filled(s, -2.0, 2.0), Just((0..r).collect::<Vec<usize>>()).prop_shuffle(), -ri..ri, -ri..ri)
        })
    ) {
        check("permute", move |v| Ok(v[0].permute(&perm)?.sin()), std::slice::from_ref(&x))?;
        check("transpose", move |v| Ok(v[0].transpose(a, b)?.sin()), std::slice::from_ref(&x))?;
        if x.rank() >= 2 {
            check("t", |v| Ok(v[0].t()?.square()), &[x])?;
        }
    }

    #[test]
    fn broadcast_to(
        (out, x) in broadcast_shapes(1, 3).prop_flat_map(|(out, s)| (Just(out), filled(s[0].clone(), -2.0, 2.0)))
    ) {
        check("broadcast_to", move |v| Ok(v[0].broadcast_to(out.clone())?.sin()), &[x])?;
    }

    #[test]
    fn concat_stack_split(
        (xs, axis) in shape(1..=3, 3).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, prop::collection::vec(0usize..=3, 1..=3))
        }).prop_flat_map(|(s, axis, sizes)| {
            let parts: Vec<_> = sizes
                .into_iter()
                .map(|n| {
                    let mut d = s.clone();
                    d[axis] = n;
                    filled(d, -2.0, 2.0)
                })
                .collect();
            (parts, Just(axis))
        })
    ) {
        let k = xs.len();
        check("concat", move |v| {
            let refs: Vec<&Tensor<f64>> = v.iter().collect();
            Ok(Tensor::concat(&refs, axis as isize)?.sin())
        }, &xs)?;
        let neg = axis as isize - xs[0].rank() as isize;
        check("concat negative axis", move |v| {
            let refs: Vec<&Tensor<f64>> = v.iter().collect();
            Ok(Tensor::concat(&refs, neg)?.square())
        }, &xs)?;
        // stack needs equal shapes: stack copies of the first part's shape
        let first = xs[0].clone();
        let same: Vec<Tensor<f64>> = (0..k).map(|i| first.mul_scalar(i as f64 + 1.0)).collect();
        for ax in 0..=first.rank() as isize {
            check("stack", move |v| {
                let refs: Vec<&Tensor<f64>> = v.iter().collect();
                Ok(Tensor::stack(&refs, ax)?.sin())
            }, &same)?;
        }
        // split the concatenation back into its parts, weigh each differently
        let sizes: Vec<usize> = xs.iter().map(|x| x.dims()[axis]).collect();
        let whole = Tensor::concat(&xs.iter().collect::<Vec<_>>(), axis as isize).unwrap();
        check("split", move |v| {
            let parts = v[0].split(&sizes, axis as isize)?;
            let mut acc = Tensor::scalar(0.0);
            for (i, p) in parts.iter().enumerate() {
                acc = acc.add(&p.sin().sum_all().mul_scalar(i as f64 + 1.0))?;
            }
            Ok(acc)
        }, &[whole])?;
    }

    #[test]
    fn slice_narrow_pad(
        (x, ranges, widths, ax) in shape(1..=3, 4).prop_flat_map(|s| {
            let r = s.len();
            let ranges: Vec<_> = s.iter().map(|&d| (0..=d).prop_flat_map(move |a| (Just(a), a..=d))).collect();
            let widths = prop::collection::vec((0usize..3, 0usize..3), 0..=r);
            (filled(s, -2.0, 2.0), ranges, widths, 0..r)
        }),
        keep_ranges in 0usize..=3,
    ) {
        let ranges: Vec<std::ops::Range<usize>> = ranges
            .into_iter()
            .take(keep_ranges)
            .map(|(a, b)| a..b)
            .collect();
        let d = x.dims()[ax];
        check("slice", move |v| Ok(v[0].slice(&ranges)?.sin()), std::slice::from_ref(&x))?;
        check("narrow", move |v| Ok(v[0].narrow(ax as isize, d / 2, d - d / 2)?.sin()), std::slice::from_ref(&x))?;
        check("pad", move |v| Ok(v[0].pad(&widths)?.cos()), &[x])?;
    }

    #[test]
    fn index_select_gather(
        (x, axis, idx) in shape(1..=3, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        }).prop_flat_map(|(s, axis)| {
            let d = s[axis];
            (filled(s, -2.0, 2.0), Just(axis), prop::collection::vec(0..d, 0..=6))
        })
    ) {
        let i = idx.clone();
        check("index_select", move |v| Ok(v[0].index_select(axis as isize, &i)?.sin()), std::slice::from_ref(&x))?;
        // gather with a 2-D integer index tensor of the same entries, repeated
        let g: Vec<i32> = idx.iter().chain(&idx).map(|&i| i as i32).collect();
        let g = Tensor::from_vec(g, [2, idx.len()]).unwrap();
        check("gather", move |v| Ok(v[0].gather(axis as isize, &g)?.sin()), &[x])?;
    }

    #[test]
    fn scatter_add(
        (base, src, axis, idx) in shape(1..=3, 4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r, 0usize..=5)
        }).prop_flat_map(|(s, axis, k)| {
            let d = s[axis];
            let mut ss = s.clone();
            ss[axis] = k;
            (filled(s, -2.0, 2.0), filled(ss, -2.0, 2.0), Just(axis), prop::collection::vec(0..d, k))
        })
    ) {
        check("scatter_add", move |v| Ok(v[0].scatter_add(axis as isize, &idx, &v[1])?.sin()), &[base, src])?;
    }

    #[test]
    fn matmul_2d_and_vectors(
        (a, b, av, bv) in (1usize..=4, 1usize..=4, 1usize..=4).prop_flat_map(|(m, k, n)| {
            (filled(vec![m, k], -2.0, 2.0), filled(vec![k, n], -2.0, 2.0), filled(vec![k], -2.0, 2.0), filled(vec![k], -2.0, 2.0))
        })
    ) {
        check("matmul", |v| Ok(v[0].matmul(&v[1])?), &[a.clone(), b.clone()])?;
        check("matmul self-composed", |v| Ok(v[0].matmul(&v[1])?.tanh().matmul(&v[1].t()?)?), &[a.clone(), b.clone()])?;
        check("vector · vector", |v| Ok(v[0].matmul(&v[1])?), &[av.clone(), bv])?;
        check("vector · matrix", |v| Ok(v[0].matmul(&v[1])?), &[av.clone(), b])?;
        check("matrix · vector", |v| Ok(v[0].matmul(&v[1])?), &[a, av])?;
    }

    #[test]
    fn matmul_transposed(
        (a, b, ta, tb) in (1usize..=4, 1usize..=4, 1usize..=4, any::<bool>(), any::<bool>()).prop_flat_map(|(m, k, n, ta, tb)| {
            let sa = if ta { vec![k, m] } else { vec![m, k] };
            let sb = if tb { vec![n, k] } else { vec![k, n] };
            (filled(sa, -2.0, 2.0), filled(sb, -2.0, 2.0), Just(ta), Just(tb))
        })
    ) {
        check("matmul_t", move |v| Ok(v[0].matmul_t(&v[1], ta, tb)?), &[a, b])?;
    }

    #[test]
    fn matmul_batched_broadcast(
        (a, b, ta, tb) in (broadcast_shapes(2, 2), 1usize..=3, 1usize..=3, 1usize..=3, any::<bool>(), any::<bool>())
            .prop_flat_map(|((_, batch), m, k, n, ta, tb)| {
                let mut sa = batch[0].clone();
                sa.extend(if ta { [k, m] } else { [m, k] });
                let mut sb = batch[1].clone();
                sb.extend(if tb { [n, k] } else { [k, n] });
                (filled(sa, -2.0, 2.0), filled(sb, -2.0, 2.0), Just(ta), Just(tb))
            })
    ) {
        check("batched matmul_t", move |v| Ok(v[0].matmul_t(&v[1], ta, tb)?), &[a.clone(), b.clone()])?;
        if !ta && !tb {
            check("batched matmul", |v| Ok(v[0].matmul(&v[1])?), &[a, b])?;
        }
    }

    #[test]
    fn cast_round_trip(x in shape(0..=3, 4).prop_flat_map(|s| filled(s, -2.0, 2.0))) {
        // through f32: differences of f32 values need a coarse step
        let coarse = GradcheckOptions { eps: 1e-2, atol: 2e-3, rtol: 1e-3, ..GradcheckOptions::default() };
        check_with("cast f32", |v| Ok(v[0].cast::<f32>().square().cast::<f64>()), std::slice::from_ref(&x), &coarse)?;
        check("cast f64", |v| Ok(v[0].cast::<f64>().sin()), &[x])?;
    }

    /// A composite: a two-layer network with cross entropy, every input
    /// (data and weights) checked.
    #[test]
    fn mlp_composite(
        (x, w1, b1, w2, labels) in (1usize..=4, 1usize..=3, 1usize..=4, 2usize..=3).prop_flat_map(|(b, d, h, c)| {
            (
                filled(vec![b, d], -1.0, 1.0),
                filled(vec![d, h], -1.0, 1.0),
                filled(vec![h], -1.0, 1.0),
                filled(vec![h, c], -1.0, 1.0),
                prop::collection::vec(0..c, b),
            )
        })
    ) {
        check("mlp", move |v| {
            let h = v[0].matmul(&v[1])?.add(&v[2])?.tanh();
            Ok(h.matmul(&v[3])?.sparse_softmax_cross_entropy(&labels)?.mean_all())
        }, &[x, w1, b1, w2])?;
    }

    /// Second derivatives through the non-unary families.
    #[test]
    fn families_second_order(
        x in shape(1..=2, 3).prop_flat_map(|s| filled(s, -1.5, 1.5)),
        seed in any::<u64>(),
    ) {
        let ct = Tensor::<f64>::rand_normal(x.shape().clone(), 0.0, 1.0, &mut rime_tensor::seeded_rng(seed)).unwrap();
        let w = x.cos();
        let ops: Vec<(&str, BoxedOp)> = vec![
            ("softmax", Box::new(|x| Ok(x.softmax(-1)?))),
            ("log_softmax", Box::new(|x| Ok(x.log_softmax(0)?))),
            ("logsumexp", Box::new(|x| Ok(x.logsumexp(&[-1], true)?.broadcast_to(x.shape().clone())?))),
            ("var", Box::new(|x| Ok(x.var(&[0], true)?.mul(x)?))),
            ("mean", Box::new(|x| Ok(x.mean(&[], true)?.mul(x)?))),
            ("div", Box::new(|x| Ok(x.div(&x.square().add_scalar(1.0))?))),
            ("pow", Box::new(|x| Ok(x.square().add_scalar(0.5).pow(x)?))),
            ("matmul", Box::new(move |x| { let m = x.reshape([x.len(), 1])?; Ok(m.matmul(&m.t()?)?.sum(&[1], false)?.reshape(x.shape().clone())?) })),
            ("mul", Box::new(move |x| Ok(x.mul(&w)?.mul(x)?))),
            ("slice/pad", Box::new(|x| { let r: Vec<_> = x.dims().iter().map(|&d| 0..d).collect(); Ok(x.pad(&[(1, 1)])?.square().slice(&r)?) })),
            ("index_select", Box::new(|x| { let y = x.index_select(0, &[0, 0])?; Ok(y.square().scatter_add(0, &[0, 0], &y)?.sum(&[0], true)?.broadcast_to(x.shape().clone())?) })),
            ("sparse ce", Box::new(|x| { let n = x.len() / x.dims()[x.rank() - 1]; Ok(x.sparse_softmax_cross_entropy(&vec![0; n])?.sum_all().mul(x)?) })),
        ];
        for (name, op) in &ops {
            let ct = ct.clone();
            check(&format!("d/dx grad {name}"), |v| {
                let tape = GradientTape::new();
                tape.watch(&v[0]);
                let y = op(&v[0])?;
                let g = tape.gradient_with(&[&y], &[&v[0]], rime_tape::GradientOptions {
                    output_gradients: Some(std::slice::from_ref(&ct)),
                    unconnected: rime_tape::UnconnectedGradients::Zero,
                })?;
                Ok(g.into_iter().next().flatten().unwrap())
            }, std::slice::from_ref(&x))?;
        }
    }
}

/// gradcheck itself: a wrong hand-written gradient is caught, and the report
/// names the input, the element and both values.
#[test]
fn gradcheck_reports_the_worst_element() {
    let x = t(&[0.5, -1.0, 2.0], &[3]);
    let y = t(&[1.5, 0.25], &[2]);
    let f = |v: &[Tensor<f64>]| {
        // forward x², backward claims 2x everywhere except 3x at index 2
        let sq = custom_gradient(
            "bad_square",
            &[&v[0]],
            |xs| Ok(xs[0].square()),
            |xs, _, dy| {
                let k = t(&[2.0, 2.0, 3.0], &[3]);
                Ok(vec![Some(dy.mul(&xs[0].mul(&k)?)?)])
            },
        )?;
        Ok(sq.sum_all().mul(&v[1].sum_all())?)
    };
    let err = gradcheck(f, &[x, y], &GradcheckOptions::default()).unwrap_err();
    match err {
        GradcheckError::Mismatch {
            input,
            index,
            analytic,
            numeric,
        } => {
            assert_eq!(input, 0);
            assert_eq!(index, vec![2]);
            // d/dx2 of x2² · (1.5 + 0.25) = 2 · 2 · 1.75 = 7; the bad rule says 10.5
            assert!((numeric - 7.0).abs() < 1e-6, "{numeric}");
            assert!((analytic - 10.5).abs() < 1e-12, "{analytic}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// A multi-axis index is reported for a 2-D input.
#[test]
fn gradcheck_reports_multi_index() {
    let x = t(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[2, 3]);
    let f = |v: &[Tensor<f64>]| {
        custom_gradient(
            "off_by_one",
            &[&v[0]],
            |xs| Ok(xs[0].mul_scalar(2.0)),
            |_, _, dy| {
                let mut d = dy.mul_scalar(2.0).to_vec();
                d[4] += 1.0;
                Ok(vec![Some(Tensor::from_vec(d, [2, 3])?)])
            },
        )
    };
    match gradcheck(f, &[x], &GradcheckOptions::default()) {
        Err(GradcheckError::Mismatch {
            input: 0, index, ..
        }) => assert_eq!(index, vec![1, 1]),
        other => panic!("expected a mismatch at [1, 1], got {other:?}"),
    }
}

/// A function of no input is a pass with zero gradients, and an error in
/// the function is reported as such.
#[test]
fn gradcheck_of_constant_and_failing_functions() {
    let x = t(&[1.0, 2.0], &[2]);
    let c = t(&[3.0], &[1]);
    let r = gradcheck(
        move |_| Ok(c.clone()),
        std::slice::from_ref(&x),
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert_eq!(r.checked, 2);
    assert_eq!(r.max_abs_error, 0.0);
    let e = gradcheck(
        |v| Ok(v[0].reshape([3])?),
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, GradcheckError::Failed(rime_tape::Error::Tensor(_))),
        "{e:?}"
    );
}

/// A random valid convolution: (input shape, kernel shape, options).
fn conv_case() -> BoxedStrategy<(Vec<usize>, Vec<usize>, rime_tensor::Conv2dOptions)> {
    use rime_tensor::{Conv2dOptions, Padding};
    (
        (1usize..=2, 1usize..=6, 1usize..=6),
        (1usize..=2, 1usize..=2, 1usize..=2),
        (1usize..=3, 1usize..=3),
        (
            1usize..=2,
            1usize..=2,
            1usize..=2,
            1usize..=2,
            any::<bool>(),
        ),
    )
        .prop_filter_map(
            "kernel fits",
            |((n, h, w), (groups, cg, og), (kh, kw), (sh, sw, dh, dw, same))| {
                let (dh, dw) = if sh > 1 || sw > 1 { (1, 1) } else { (dh, dw) };
                let opts = Conv2dOptions {
                    strides: [sh, sw],
                    padding: if same { Padding::Same } else { Padding::Valid },
                    dilation: [dh, dw],
                    groups,
                };
                let x = vec![n, h, w, cg * groups];
                let k = vec![kh, kw, cg, og * groups];
                rime_tensor::Conv2dGeometry::new("t", &x.clone().into(), &k.clone().into(), &opts)
                    .ok()
                    .map(|_| (x, k, opts))
            },
        )
        .boxed()
}

fn conv_inputs() -> BoxedStrategy<(Tensor<f64>, Tensor<f64>, rime_tensor::Conv2dOptions)> {
    conv_case()
        .prop_flat_map(|(x, k, o)| (filled(x, -1.0, 1.0), filled(k, -1.0, 1.0), Just(o)))
        .boxed()
}

type FnMany = dyn Fn(&[Tensor<f64>]) -> rime_tape::Result<Tensor<f64>>;

/// `∂/∂v[wrt] ‖f(v)‖²` computed by an inner tape: gradcheck's tape then
/// differentiates the gradient rule itself (second derivatives).
fn inner_grad(f: &FnMany, v: &[Tensor<f64>], wrt: usize) -> rime_tape::Result<Tensor<f64>> {
    let tape = GradientTape::new();
    tape.watch(&v[wrt]);
    let y = f(v)?;
    let g = tape.gradient_with(
        &[&y.square().sum_all()],
        &[&v[wrt]],
        rime_tape::GradientOptions {
            output_gradients: None,
            unconnected: rime_tape::UnconnectedGradients::Zero,
        },
    )?;
    Ok(g.into_iter().next().flatten().unwrap())
}

proptest! {
    #![proptest_config(config(48))]

    /// conv2d and its two gradient ops, each against finite differences in
    /// both inputs, over random shapes, strides, paddings, dilations, groups.
    #[test]
    fn conv2d_family((x, k, o) in conv_inputs()) {
        let g = rime_tensor::Conv2dGeometry::new("t", x.shape(), k.shape(), &o).unwrap();
        check("conv2d", move |v| Ok(v[0].conv2d(&v[1], &o)?), &[x.clone(), k.clone()])?;
        let dy = Tensor::<f64>::rand_normal(g.output_shape(), 0.0, 1.0, &mut rime_tensor::seeded_rng(7)).unwrap();
        let g1 = g.clone();
        check("conv2d_backprop_input", move |v| Ok(v[0].conv2d_backprop_input(&v[1], &g1)?), &[dy.clone(), k.clone()])?;
        let g2 = g.clone();
        check("conv2d_backprop_filter", move |v| Ok(v[0].conv2d_backprop_filter(&v[1], &g2)?), &[x.clone(), dy])?;
        // second derivatives: the gradient (in x, then in w) of a loss on
        // the convolution, as a function of both inputs
        let f = move |v: &[Tensor<f64>]| -> rime_tape::Result<Tensor<f64>> { Ok(v[0].conv2d(&v[1], &o)?.tanh()) };
        check("d/d(x, w) grad_x conv2d", move |v| inner_grad(&f, v, 0), &[x.clone(), k.clone()])?;
        check("d/d(x, w) grad_w conv2d", move |v| inner_grad(&f, v, 1), &[x, k])?;
    }

    #[test]
    fn conv1d_depthwise_transpose(
        (n, w, c, m, k, s, same) in (1usize..=2, 2usize..=7, 1usize..=3, 1usize..=2, 1usize..=3, 1usize..=2, any::<bool>()),
        seed in any::<u64>(),
    ) {
        use rime_tensor::{Conv1dOptions, Conv2dOptions, Padding, ops::conv::conv_transpose_output_size};
        let padding = if same { Padding::Same } else { Padding::Valid };
        prop_assume!(same || w >= k);
        let rng = &mut rime_tensor::seeded_rng(seed);
        let x1 = Tensor::<f64>::rand_normal([n, w, c], 0.0, 1.0, rng).unwrap();
        let k1 = Tensor::<f64>::rand_normal([k, c, m], 0.0, 1.0, rng).unwrap();
        let o1 = Conv1dOptions { stride: s, padding, dilation: 1, groups: 1 };
        check("conv1d", move |v| Ok(v[0].conv1d(&v[1], &o1)?), &[x1, k1])?;
        let x2 = Tensor::<f64>::rand_normal([n, w, w + 1, c], 0.0, 1.0, rng).unwrap();
        let k2 = Tensor::<f64>::rand_normal([k, k, c, m], 0.0, 1.0, rng).unwrap();
        let o2 = Conv2dOptions::default().strides([s, s]).padding(padding);
        check("depthwise_conv2d", move |v| Ok(v[0].depthwise_conv2d(&v[1], &o2)?), &[x2.clone(), k2])?;
        // transpose: kernel [kh, kw, out, in]
        let kt = Tensor::<f64>::rand_normal([k, k, m, c], 0.0, 1.0, rng).unwrap();
        let out = [
            conv_transpose_output_size(w, k, s, 1, padding).unwrap(),
            conv_transpose_output_size(w + 1, k, s, 1, padding).unwrap(),
        ];
        check("conv2d_transpose", move |v| Ok(v[0].conv2d_transpose(&v[1], out, &o2)?.tanh()), &[x2, kt])?;
    }

    /// Pooling (max on distinct values, so no ties), first and second order.
    #[test]
    fn pooling(
        (x, pool, strides, same) in (1usize..=2, 1usize..=6, 1usize..=6, 1usize..=2)
            .prop_flat_map(|(n, h, w, c)| (distinct(vec![n, h, w, c]), (1usize..=3, 1usize..=3), (1usize..=3, 1usize..=3), any::<bool>()))
    ) {
        use rime_tensor::{Padding, Pool2dOptions};
        let o = Pool2dOptions {
            pool_size: [pool.0, pool.1],
            strides: [strides.0, strides.1],
            padding: if same { Padding::Same } else { Padding::Valid },
        };
        prop_assume!(rime_tensor::Pool2dGeometry::new("t", x.shape(), &o).is_ok());
        check("max_pool2d", move |v| Ok(v[0].max_pool2d(&o)?), std::slice::from_ref(&x))?;
        check("avg_pool2d", move |v| Ok(v[0].avg_pool2d(&o)?), std::slice::from_ref(&x))?;
        let fmax = move |v: &[Tensor<f64>]| -> rime_tape::Result<Tensor<f64>> { Ok(v[0].max_pool2d(&o)?.sin()) };
        check("d/dx grad max_pool2d", move |v| inner_grad(&fmax, v, 0), std::slice::from_ref(&x))?;
        let favg = move |v: &[Tensor<f64>]| -> rime_tape::Result<Tensor<f64>> { Ok(v[0].avg_pool2d(&o)?.sin()) };
        check("d/dx grad avg_pool2d", move |v| inner_grad(&favg, v, 0), std::slice::from_ref(&x))?;
        let x3 = x.reshape([x.dims()[0], x.dims()[1] * x.dims()[2], x.dims()[3]]).unwrap();
        check("max_pool1d", move |v| Ok(v[0].max_pool1d(2, 1, Padding::Same)?), std::slice::from_ref(&x3))?;
        check("avg_pool1d", move |v| Ok(v[0].avg_pool1d(2, 2, Padding::Same)?), std::slice::from_ref(&x3))?;
        check("global pools", |v| Ok(v[0].global_avg_pool(false)?.add(&v[0].global_max_pool(false)?)?), std::slice::from_ref(&x))?;
        check("zero_pad2d / upsample", |v| Ok(v[0].zero_pad2d(((1, 0), (0, 2)))?.upsample_nearest2d([2, 3])?.sin()), &[x])?;
    }
}

/// A gradient penalty on a small CNN (conv → relu → max pool → dense): the
/// gradient of `‖∂loss/∂x‖²` with respect to the conv kernel, against
/// finite differences. Relu's second derivative is zero almost everywhere,
/// so tanh keeps every path alive.
#[test]
fn cnn_gradient_penalty() {
    use rime_tensor::{Conv2dOptions, Padding, Pool2dOptions};
    let rng = &mut rime_tensor::seeded_rng(3);
    let x = Tensor::<f64>::rand_normal([2, 6, 6, 2], 0.0, 1.0, rng).unwrap();
    let k = Tensor::<f64>::rand_normal([3, 3, 2, 3], 0.0, 0.5, rng).unwrap();
    let w = Tensor::<f64>::rand_normal([12, 2], 0.0, 0.5, rng).unwrap();
    let penalty = move |v: &[Tensor<f64>]| -> rime_tape::Result<Tensor<f64>> {
        let xs = x.detach();
        let tape = GradientTape::new();
        tape.watch(&xs);
        let h = xs
            .conv2d(
                &v[0],
                &Conv2dOptions::default()
                    .strides([2, 2])
                    .padding(Padding::Same),
            )?
            .tanh()
            .max_pool2d(&Pool2dOptions::new([2, 2]).strides([1, 1]))?;
        let logits = h.reshape([2, 12])?.matmul(&v[1])?;
        let loss = logits.sparse_softmax_cross_entropy(&[0, 1])?.sum_all();
        let gx = tape.gradient(&loss, &[&xs])?.remove(0).unwrap();
        Ok(gx.square().sum_all())
    };
    let report = gradcheck(penalty, &[k, w], &GradcheckOptions::default()).unwrap();
    assert_eq!(report.checked, 54 + 24);
}

// ---- the fused dense op (rules/dense.rs) ----

const DENSE_ACTIVATIONS: [rime_tensor::DenseActivation; 4] = [
    rime_tensor::DenseActivation::Linear,
    rime_tensor::DenseActivation::Relu,
    rime_tensor::DenseActivation::Sigmoid,
    rime_tensor::DenseActivation::Tanh,
];

/// `(x, kernel, bias) ↦` the gradients of `<dense(x, kernel, bias), ct>`
/// for all three, folded into one scalar: differentiating it checks the
/// second derivatives through the rule (its ops recorded by gradcheck's
/// tape).
fn dense_inner_gradients(
    v: &[Tensor<f64>],
    act: rime_tensor::DenseActivation,
    ct: &Tensor<f64>,
) -> rime_tape::Result<Tensor<f64>> {
    let tape = GradientTape::new();
    for x in v {
        tape.watch(x);
    }
    let y = v[0].dense(&v[1], Some(&v[2]), act)?;
    let g = tape.gradient_with(
        &[&y],
        &[&v[0], &v[1], &v[2]],
        rime_tape::GradientOptions {
            output_gradients: Some(std::slice::from_ref(ct)),
            unconnected: rime_tape::UnconnectedGradients::Zero,
        },
    )?;
    let [Some(dx), Some(dw), Some(db)] = [g[0].clone(), g[1].clone(), g[2].clone()] else {
        unreachable!("zero-filled")
    };
    Ok(dx
        .sin()
        .sum_all()
        .add(&dw.square().sum_all())?
        .add(&db.mul(&db.sin())?.sum_all())?)
}

proptest! {
    #![proptest_config(config(24))]

    /// First and second derivatives of `dense` for every activation, with
    /// and without a bias; relu only away from its kink (`|z| >= 1e-3`).
    #[test]
    fn dense_first_and_second_order(
        (x, w, b, ct) in (1usize..=4, 1usize..=4, 1usize..=4).prop_flat_map(|(m, k, n)| {
            (
                filled(vec![m, k], -1.5, 1.5),
                filled(vec![k, n], -1.5, 1.5),
                filled(vec![n], -1.0, 1.0),
                filled(vec![m, n], -1.0, 1.0),
            )
        })
    ) {
        // with and without the bias
        let p = x.matmul(&w).unwrap();
        let z = p.add(&b).unwrap();
        let near_kink = z.as_slice().iter().chain(p.as_slice()).any(|v| v.abs() < 1e-3);
        for act in DENSE_ACTIVATIONS {
            if act == rime_tensor::DenseActivation::Relu && near_kink {
                continue;
            }
            let inputs = [x.clone(), w.clone(), b.clone()];
            check(&format!("dense {act:?}"), move |v| Ok(v[0].dense(&v[1], Some(&v[2]), act)?.sin()), &inputs)?;
            check(&format!("dense {act:?} without bias"), move |v| Ok(v[0].dense(&v[1], None, act)?.sin()), &inputs[..2])?;
            let ct = ct.clone();
            check(&format!("d/d(x, w, b) grads of dense {act:?}"), move |v| dense_inner_gradients(v, act, &ct), &inputs)?;
        }
    }
}
