//! NumPy broadcasting over contiguous buffers.
//!
//! The output index space is coalesced (size-1 axes dropped, neighbouring
//! axes merged where every operand is contiguous across them) into `outer`
//! rows of `inner` elements. Along a row each operand is either contiguous
//! (stride 1) or constant (stride 0), so the inner loop is one of four
//! vectorizable shapes. Large outputs are split into element ranges (rows
//! cut where a range boundary falls) across rayon's pool.

use std::mem::MaybeUninit;

use smallvec::SmallVec;

use super::{try_build, vectorized, write_fill, write_map, write_zip};
use crate::shape::broadcast_strides;
use crate::{Element, Result, Shape};

type Dims = SmallVec<[usize; 4]>;

/// How `N` operands are read along the rows of a broadcast output.
pub(crate) struct Plan<const N: usize> {
    /// Coalesced outer dims (every axis but the innermost).
    outer_dims: Dims,
    /// Per operand, its stride along each outer dim.
    outer_strides: [Dims; N],
    /// Length of a row.
    pub inner: usize,
    /// Per operand, its stride along a row (0 or 1).
    pub inner_stride: [usize; N],
}

impl<const N: usize> Plan<N> {
    /// Plans reading operands of `shapes` in the index space of `out`
    /// (every shape must broadcast to `out`).
    pub fn new(shapes: [&Shape; N], out: &Shape) -> Self {
        let strides: [Dims; N] = std::array::from_fn(|k| broadcast_strides(shapes[k], out));
        // drop size-1 axes, then merge neighbours contiguous in every operand
        let mut dims: Dims = SmallVec::new();
        let mut st: [Dims; N] = std::array::from_fn(|_| SmallVec::new());
        for (i, &d) in out.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let mergeable =
                !dims.is_empty() && (0..N).all(|k| *st[k].last().unwrap() == strides[k][i] * d);
            if mergeable {
                *dims.last_mut().unwrap() *= d;
                for k in 0..N {
                    *st[k].last_mut().unwrap() = strides[k][i];
                }
            } else {
                dims.push(d);
                for k in 0..N {
                    st[k].push(strides[k][i]);
                }
            }
        }
        let inner = dims.pop().unwrap_or(1);
        let inner_stride = std::array::from_fn(|k| st[k].pop().unwrap_or(0));
        Plan {
            outer_dims: dims,
            outer_strides: st,
            inner,
            inner_stride,
        }
    }

    /// Number of rows.
    pub fn outer(&self) -> usize {
        self.outer_dims.iter().product()
    }

    /// Calls `f(row, offsets)` for rows `start..end` in order, with each
    /// operand's offset at the start of the row.
    #[inline(always)]
    pub fn for_rows(&self, start: usize, end: usize, mut f: impl FnMut(usize, [usize; N])) {
        if start >= end {
            return;
        }
        let r = self.outer_dims.len();
        // decompose `start` into a multi-index, then count like an odometer
        let mut idx: Dims = SmallVec::from_elem(0, r);
        let mut rem = start;
        for j in (0..r).rev() {
            idx[j] = rem % self.outer_dims[j];
            rem /= self.outer_dims[j];
        }
        let mut off: [usize; N] =
            std::array::from_fn(|k| (0..r).map(|j| idx[j] * self.outer_strides[k][j]).sum());
        for row in start..end {
            f(row, off);
            for j in (0..r).rev() {
                idx[j] += 1;
                for (k, o) in off.iter_mut().enumerate() {
                    *o += self.outer_strides[k][j];
                }
                if idx[j] < self.outer_dims[j] {
                    break;
                }
                for (k, o) in off.iter_mut().enumerate() {
                    *o -= self.outer_strides[k][j] * self.outer_dims[j];
                }
                idx[j] = 0;
            }
        }
    }
}

/// Calls `row(dst_part, offsets, len)` over the output range
/// `start..start + dst.len()`, one call per (possibly partial) row, where
/// `offsets` are each operand's offset at the first element of the part.
#[inline(always)]
fn for_range<T, const N: usize>(
    plan: &Plan<N>,
    start: usize,
    dst: &mut [MaybeUninit<T>],
    mut row: impl FnMut(&mut [MaybeUninit<T>], [usize; N]),
) {
    let inner = plan.inner;
    let end = start + dst.len();
    if inner == 0 || start >= end {
        return;
    }
    let mut pos = start;
    plan.for_rows(
        start / inner,
        end.div_ceil(inner),
        #[inline(always)]
        |r, off| {
            let row_start = r * inner;
            let lo = pos - row_start;
            let hi = inner.min(end - row_start);
            let offsets = std::array::from_fn(|k| off[k] + lo * plan.inner_stride[k]);
            row(&mut dst[pos - start..pos - start + (hi - lo)], offsets);
            pos = row_start + hi;
        },
    );
    debug_assert_eq!(pos, end);
}

/// `out = f(a, b)` with broadcasting; `out_shape` is the broadcast shape and
/// `cost` the work per element (see [`super::ARITH`]).
#[allow(clippy::too_many_arguments)] // op name, two operands with shapes, output shape, cost, f
pub(crate) fn binary<T: Element, F>(
    op: &'static str,
    a: &[T],
    a_shape: &Shape,
    b: &[T],
    b_shape: &Shape,
    out_shape: &Shape,
    cost: usize,
    f: F,
) -> Result<Vec<T>>
where
    F: Fn(T, T) -> T + Sync + Send,
{
    if a_shape == b_shape {
        return Ok(super::zip_map(a, b, cost, f));
    }
    let plan = Plan::new([a_shape, b_shape], out_shape);
    let [sa, sb] = plan.inner_stride;
    let n = out_shape.checked_len::<T>(op)?;
    try_build(op, n, cost, |start, dst| {
        vectorized(
            #[inline(always)]
            || {
                for_range(
                    &plan,
                    start,
                    dst,
                    #[inline(always)]
                    |o, [oa, ob]| {
                        let len = o.len();
                        match (sa, sb) {
                            (1, 1) => write_zip(o, &a[oa..oa + len], &b[ob..ob + len], &f),
                            (1, 0) => {
                                let y = b[ob];
                                write_map(o, &a[oa..oa + len], |x| f(x, y))
                            }
                            (0, 1) => {
                                let x = a[oa];
                                write_map(o, &b[ob..ob + len], |y| f(x, y))
                            }
                            _ => write_fill(o, f(a[oa], b[ob])),
                        }
                    },
                )
            },
        )
    })
}

/// `out = f(a, b, c)` with broadcasting (used by `select`).
pub(crate) fn ternary<T: Element, F>(
    op: &'static str,
    inputs: [(&[T], &Shape); 3],
    out_shape: &Shape,
    f: F,
) -> Result<Vec<T>>
where
    F: Fn(T, T, T) -> T + Sync + Send,
{
    let plan = Plan::new([inputs[0].1, inputs[1].1, inputs[2].1], out_shape);
    let [s0, s1, s2] = plan.inner_stride;
    let (x, y, z) = (inputs[0].0, inputs[1].0, inputs[2].0);
    let n = out_shape.checked_len::<T>(op)?;
    try_build(op, n, super::ARITH, |start, dst| {
        vectorized(
            #[inline(always)]
            || {
                for_range(
                    &plan,
                    start,
                    dst,
                    #[inline(always)]
                    |o, [o0, o1, o2]| {
                        if (s0, s1, s2) == (1, 1, 1) {
                            let len = o.len();
                            let (x, y, z) = (&x[o0..o0 + len], &y[o1..o1 + len], &z[o2..o2 + len]);
                            for (i, d) in o.iter_mut().enumerate() {
                                d.write(f(x[i], y[i], z[i]));
                            }
                        } else {
                            for (i, d) in o.iter_mut().enumerate() {
                                d.write(f(x[o0 + i * s0], y[o1 + i * s1], z[o2 + i * s2]));
                            }
                        }
                    },
                )
            },
        )
    })
}

/// Materializes `x` broadcast to `out_shape`.
pub(crate) fn expand<T: crate::Scalar>(
    op: &'static str,
    x: &[T],
    x_shape: &Shape,
    out_shape: &Shape,
) -> Result<Vec<T>> {
    let n = out_shape.checked_len::<T>(op)?;
    let plan = Plan::new([x_shape], out_shape);
    let [s] = plan.inner_stride;
    try_build(op, n, super::ARITH, |start, dst| {
        for_range(&plan, start, dst, |o, [ox]| {
            if s == 1 {
                write_map(o, &x[ox..ox + o.len()], |v| v)
            } else {
                write_fill(o, x[ox])
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], sa: &[usize], b: &[f64], sb: &[usize], so: &[usize]) -> Vec<f64> {
        let (sa, sb, so) = (Shape::from(sa), Shape::from(sb), Shape::from(so));
        let (ta, tb) = (broadcast_strides(&sa, &so), broadcast_strides(&sb, &so));
        let ostr = so.strides();
        (0..so.numel())
            .map(|i| {
                let (mut ia, mut ib) = (0, 0);
                for d in 0..so.rank() {
                    let c = (i / ostr[d]) % so[d];
                    ia += c * ta[d];
                    ib += c * tb[d];
                }
                a[ia] * 10.0 + b[ib]
            })
            .collect()
    }

    #[test]
    fn matches_naive_indexing() {
        let cases: &[(&[usize], &[usize], &[usize])] = &[
            (&[2, 3], &[3], &[2, 3]),
            (&[2, 1], &[1, 3], &[2, 3]),
            (&[4, 1, 3], &[5, 1], &[4, 5, 3]),
            (&[], &[2, 2], &[2, 2]),
            (&[3, 1, 1], &[1, 2, 1], &[3, 2, 1]),
            (&[1], &[1], &[1]),
        ];
        for &(sa, sb, so) in cases {
            let a: Vec<f64> = (0..Shape::from(sa).numel()).map(|i| i as f64).collect();
            let b: Vec<f64> = (0..Shape::from(sb).numel()).map(|i| -(i as f64)).collect();
            let got = binary(
                "t",
                &a,
                &sa.into(),
                &b,
                &sb.into(),
                &so.into(),
                1,
                |x, y| x * 10.0 + y,
            )
            .unwrap();
            assert_eq!(got, naive(&a, sa, &b, sb, so), "{sa:?} {sb:?}");
        }
    }

    #[test]
    fn parallel_rows_match_serial() {
        let (r, c) = (1100, 257);
        assert!(r * c > crate::kernels::PAR_THRESHOLD);
        let a: Vec<f64> = (0..r * c).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..c).map(|i| i as f64 * 0.5).collect();
        let got = binary(
            "t",
            &a,
            &[r, c].into(),
            &b,
            &[c].into(),
            &[r, c].into(),
            1,
            |x, y| x - y,
        )
        .unwrap();
        for i in 0..r * c {
            assert_eq!(got[i], a[i] - b[i % c]);
        }
    }

    #[test]
    fn large_scalar_and_column_broadcasts_split_rows() {
        let n = crate::kernels::PAR_THRESHOLD * 2 + 3;
        let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let got = binary(
            "t",
            &a,
            &[n].into(),
            &[2.0],
            &[].into(),
            &[n].into(),
            1,
            |x, y| x * y,
        )
        .unwrap();
        assert!(got.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f64));
        // [r, 1] op [1, c]: neither operand is contiguous along a row
        let (r, c) = (1001, 263);
        assert!(r * c > crate::kernels::PAR_THRESHOLD);
        let col: Vec<f64> = (0..r).map(|i| i as f64).collect();
        let row: Vec<f64> = (0..c).map(|j| j as f64 * 1e-3).collect();
        let got = binary(
            "t",
            &col,
            &[r, 1].into(),
            &row,
            &[1, c].into(),
            &[r, c].into(),
            1,
            |x, y| x + y,
        )
        .unwrap();
        for i in (0..r).step_by(97) {
            for j in 0..c {
                assert_eq!(got[i * c + j], col[i] + row[j]);
            }
        }
        let e = expand("t", &row, &[c].into(), &[r, c].into()).unwrap();
        assert!(e.chunks(c).all(|ch| ch == &row[..]));
    }

    #[test]
    fn expand_repeats() {
        let x = [1.0f32, 2.0];
        assert_eq!(
            expand("t", &x, &[2, 1].into(), &[2, 3].into()).unwrap(),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
        assert_eq!(
            expand("t", &x, &[2].into(), &[2, 2].into()).unwrap(),
            vec![1.0, 2.0, 1.0, 2.0]
        );
    }
}
