//! Matrix products: 2-D and batched (leading axes broadcast), with either
//! operand read transposed in place. Gradient rule: rime-tape
//! `rules/matmul.rs`.

use std::ops::Range;

use smallvec::SmallVec;

use crate::kernels::broadcast::Plan;
use crate::kernels::gemm::{self, MatRef};
use crate::kernels::{self, as_uninit_mut};
use crate::record::{Op, record};
use crate::{Element, Error, Result, Shape, Tensor, broadcast_shapes};

/// The validated geometry of `op(a) · op(b)`.
struct Geometry {
    m: usize,
    k: usize,
    n: usize,
    /// Per output batch entry, the element offsets of its `a` and `b` blocks.
    offsets: Vec<(usize, usize)>,
    out: Shape,
}

/// [`geometry`] for two matrices (rank 2 exactly), for `op`.
fn matrix_geometry<T>(
    op: &'static str,
    a: &Shape,
    b: &Shape,
    ta: bool,
    tb: bool,
) -> Result<Geometry> {
    for s in [a, b] {
        if s.rank() != 2 {
            return Err(Error::Rank {
                op,
                expected: "rank 2",
                shape: s.clone(),
            });
        }
    }
    geometry::<T>(a, b, ta, tb)
}

/// Validates the shapes of `op(a) · op(b)` and the output's size for `T`
/// (checked arithmetic: the output buffer and the kernels' bounds rely on it).
fn geometry<T>(a: &Shape, b: &Shape, ta: bool, tb: bool) -> Result<Geometry> {
    for s in [a, b] {
        if s.rank() < 2 {
            return Err(Error::Rank {
                op: "matmul",
                expected: "rank >= 2 (use `matmul` for vectors)",
                shape: s.clone(),
            });
        }
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if ta {
        (a[ra - 1], a[ra - 2])
    } else {
        (a[ra - 2], a[ra - 1])
    };
    let (kb, n) = if tb {
        (b[rb - 1], b[rb - 2])
    } else {
        (b[rb - 2], b[rb - 1])
    };
    if ka != kb {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: a.clone(),
            rhs: b.clone(),
            msg: format!(
                "inner dimensions differ: {ka} vs {kb} (transpose_a = {ta}, transpose_b = {tb})"
            ),
        });
    }
    let (ba, bb) = (Shape::from(&a[..ra - 2]), Shape::from(&b[..rb - 2]));
    let batch = broadcast_shapes("matmul", &ba, &bb).map_err(|e| match e {
        Error::Broadcast { .. } => Error::Broadcast {
            op: "matmul",
            lhs: a.clone(),
            rhs: b.clone(),
        },
        other => other,
    })?;
    let mut out = batch.0.clone();
    out.push(m);
    out.push(n);
    let out = Shape(out);
    out.checked_len::<T>("matmul")?;
    // both operands are valid tensors, so their matrix sizes fit
    let (sa, sb) = (m * ka, kb * n);
    let batch_len = batch.checked_len::<(usize, usize)>("matmul")?;
    let mut offsets = kernels::try_vec("matmul", batch_len)?;
    let plan = Plan::new([&ba, &bb], &batch);
    let [ia, ib] = plan.inner_stride;
    plan.for_rows(0, plan.outer(), |_, [oa, ob]| {
        for i in 0..plan.inner {
            offsets.push(((oa + i * ia) * sa, (ob + i * ib) * sb));
        }
    });
    Ok(Geometry {
        m,
        k: ka,
        n,
        offsets,
        out,
    })
}

impl<T: Element> Tensor<T> {
    /// Matrix product with NumPy's `matmul` semantics: the last two axes
    /// multiply, leading axes broadcast; a 1-D operand is a vector (a row on
    /// the left, a column on the right) whose axis is dropped from the result.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// let b = Tensor::<f32>::ones([3, 1])?;
    /// assert_eq!(a.matmul(&b)?.to_vec(), vec![6.0, 15.0]);
    /// // a batch of 4 matrices times one matrix
    /// let batch = Tensor::<f32>::ones([4, 2, 3])?;
    /// assert_eq!(batch.matmul(&b)?.shape(), &[4, 2, 1]);
    /// assert!(a.matmul(&a).is_err());
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        crate::instances::table::<T>().matmul(self, rhs)
    }

    pub(crate) fn matmul_native(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        match (self.rank(), rhs.rank()) {
            (0, _) | (_, 0) => Err(Error::Rank {
                op: "matmul",
                expected: "rank >= 1",
                shape: if self.rank() == 0 {
                    self.shape().clone()
                } else {
                    rhs.shape().clone()
                },
            }),
            (1, 1) => self
                .unsqueeze(0)?
                .matmul_t(&rhs.unsqueeze(-1)?, false, false)?
                .reshape([]),
            (1, _) => {
                let out = self.unsqueeze(0)?.matmul_t(rhs, false, false)?;
                out.squeeze(&[-2])
            }
            (_, 1) => {
                let out = self.matmul_t(&rhs.unsqueeze(-1)?, false, false)?;
                out.squeeze(&[-1])
            }
            _ => self.matmul_t(rhs, false, false),
        }
    }

    /// `op(self) · op(rhs)` where `op` transposes the last two axes when its
    /// flag is set. The transposed operand is read in place through strides,
    /// never copied (TensorFlow's `matmul(a, b, transpose_a, transpose_b)`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// // xᵀ x
    /// let g = x.matmul_t(&x, true, false)?;
    /// assert_eq!(g.to_vec(), vec![10.0, 14.0, 14.0, 20.0]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn matmul_t(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().matmul_t(self, rhs, transpose_a, transpose_b)
    }

    pub(crate) fn matmul_t_native(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<Tensor<T>> {
        let g = geometry::<T>(self.shape(), rhs.shape(), transpose_a, transpose_b)?;
        let len = g.out.numel();
        let mut out = kernels::try_buffer("matmul", len)?;
        gemm::gemm_batched(
            g.m,
            g.k,
            g.n,
            self.as_slice(),
            transpose_a,
            rhs.as_slice(),
            transpose_b,
            &g.offsets,
            &mut out.spare_capacity_mut()[..len],
        );
        // SAFETY: `out` has capacity `len` (reserved above) and
        // gemm_batched writes every element of its output (no
        // zero-fill pass first: matrixmultiply does not read C at beta 0).
        unsafe { out.set_len(len) };
        let out = Tensor::from_parts(out, g.out);
        record(
            || Op::MatMul {
                transpose_a,
                transpose_b,
            },
            &[self, rhs],
            &out,
        );
        Ok(out)
    }

    /// `op(self) · op(rhs)` for 2-D operands, computing only the blocks of
    /// the output whose row lies in one of `rows` and whose column lies in
    /// one of `cols` (`None`: all). Every other element is zero.
    ///
    /// This is how a gradient rule computes the weight gradient of a weight
    /// whose trainable part is a set of row or column blocks: the cost
    /// shrinks with the trainable part. It is not recorded on tapes.
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
    /// let full = x.matmul(&x)?;
    /// let part = x.matmul_t_blocks(&x, false, false, Some(&[1..2]), None)?;
    /// assert_eq!(part.to_vec(), vec![0.0, 0.0, full.get(&[1, 0])?, full.get(&[1, 1])?]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn matmul_t_blocks(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Option<&[Range<usize>]>,
        cols: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        crate::instances::table::<T>().matmul_t_blocks(
            self,
            rhs,
            transpose_a,
            transpose_b,
            rows,
            cols,
        )
    }

    pub(crate) fn matmul_t_blocks_native(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Option<&[Range<usize>]>,
        cols: Option<&[Range<usize>]>,
    ) -> Result<Tensor<T>> {
        let g = matrix_geometry::<T>(
            "matmul_t_blocks",
            self.shape(),
            rhs.shape(),
            transpose_a,
            transpose_b,
        )?;
        let (m, k, n) = (g.m, g.k, g.n);
        let all_rows = 0..m;
        let all_cols = 0..n;
        let rows = rows.unwrap_or(std::slice::from_ref(&all_rows));
        let cols = cols.unwrap_or(std::slice::from_ref(&all_cols));
        for (r, lim, what) in rows
            .iter()
            .map(|r| (r, m, "row"))
            .chain(cols.iter().map(|c| (c, n, "column")))
        {
            if r.start > r.end || r.end > lim {
                return Err(Error::InvalidArgument {
                    op: "matmul_t_blocks",
                    msg: format!(
                        "{what} range {r:?} is out of bounds for output shape {}",
                        g.out
                    ),
                });
            }
        }
        let mut out = kernels::try_filled("matmul_t_blocks", m * n, T::zero())?;
        let a = MatRef::new(self.as_slice(), m, k, transpose_a);
        let b = MatRef::new(rhs.as_slice(), k, n, transpose_b);
        let blocks: SmallVec<[(Range<usize>, Range<usize>); 4]> = rows
            .iter()
            .flat_map(|r| cols.iter().map(move |c| (r.clone(), c.clone())))
            .filter(|(r, c)| !r.is_empty() && !c.is_empty())
            .collect();
        for (r, c) in blocks {
            let dst = as_uninit_mut(&mut out[r.start * n + c.start..]);
            gemm::gemm_part(
                m == 1 || n == 1,
                r.len(),
                k,
                c.len(),
                a.rows_from(r.start),
                b.cols_from(c.start),
                dst,
                n,
                true,
            );
        }
        Ok(Tensor::from_parts(out, g.out))
    }

    /// Rows `rows` of the 2-D product `op(self) · op(rhs)`, written to `out`
    /// (`rows.len() × n`, row-major), each element the same bits as in the
    /// whole [`matmul_t`](Tensor::matmul_t) product. Not recorded on tapes.
    ///
    /// This is how an optimizer applies a weight gradient `xᵀδ` block by
    /// block while the block is in cache, without a buffer of the weight's
    /// size (rime-tape's `DeferredGradient`).
    ///
    /// ```
    /// use rime_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2])?;
    /// let full = x.matmul_t(&x, false, true)?; // 3×3
    /// let mut row = [0.0f32; 3];
    /// x.matmul_t_rows_into(&x, false, true, 1..2, &mut row)?;
    /// assert_eq!(row[..], full.to_vec()[3..6]);
    /// # Ok::<(), rime_tensor::Error>(())
    /// ```
    pub fn matmul_t_rows_into(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Range<usize>,
        out: &mut [T],
    ) -> Result<()> {
        crate::instances::table::<T>().matmul_t_rows_into(
            self,
            rhs,
            transpose_a,
            transpose_b,
            rows,
            out,
        )
    }

    pub(crate) fn matmul_t_rows_into_native(
        &self,
        rhs: &Tensor<T>,
        transpose_a: bool,
        transpose_b: bool,
        rows: Range<usize>,
        out: &mut [T],
    ) -> Result<()> {
        let g = matrix_geometry::<T>(
            "matmul_t_rows_into",
            self.shape(),
            rhs.shape(),
            transpose_a,
            transpose_b,
        )?;
        let (m, k, n) = (g.m, g.k, g.n);
        if rows.start > rows.end || rows.end > m {
            return Err(Error::InvalidArgument {
                op: "matmul_t_rows_into",
                msg: format!(
                    "row range {rows:?} is out of bounds for output shape {}",
                    g.out
                ),
            });
        }
        // rows.len() * n <= m * n, which fits (checked by geometry)
        if out.len() != rows.len() * n {
            return Err(Error::InvalidArgument {
                op: "matmul_t_rows_into",
                msg: format!(
                    "output buffer has {} elements, rows {rows:?} of shape {} need {}",
                    out.len(),
                    g.out,
                    rows.len() * n
                ),
            });
        }
        let a = MatRef::new(self.as_slice(), m, k, transpose_a);
        let b = MatRef::new(rhs.as_slice(), k, n, transpose_b);
        // the whole product's kernel choice (`vector`), so the bits match
        gemm::gemm_part(
            m == 1 || n == 1,
            rows.len(),
            k,
            n,
            a.rows_from(rows.start),
            b,
            as_uninit_mut(out),
            n,
            true,
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range block lists are the point
mod tests {
    use super::*;

    fn iota(shape: &[usize], scale: f64) -> Tensor<f64> {
        let n = Shape::from(shape).numel();
        Tensor::from_vec((0..n).map(|v| (v as f64 * scale).sin()).collect(), shape).unwrap()
    }

    fn naive(a: &Tensor<f64>, b: &Tensor<f64>) -> Vec<f64> {
        let (m, k, n) = (a.dims()[0], a.dims()[1], b.dims()[1]);
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a.get(&[i, p]).unwrap() * b.get(&[p, j]).unwrap())
                    .sum();
            }
        }
        c
    }

    #[test]
    fn vectors_follow_numpy() {
        let v = iota(&[3], 1.0);
        let m = iota(&[3, 2], 0.5);
        assert_eq!(v.matmul(&v).unwrap().rank(), 0);
        assert_eq!(v.matmul(&m).unwrap().shape(), &[2]);
        assert_eq!(m.t().unwrap().matmul(&v).unwrap().shape(), &[2]);
        let dot: f64 = v.as_slice().iter().map(|x| x * x).sum();
        assert!((v.matmul(&v).unwrap().to_scalar().unwrap() - dot).abs() < 1e-12);
    }

    #[test]
    fn batch_axes_broadcast() {
        let a = iota(&[2, 1, 3, 4], 0.3);
        let b = iota(&[5, 4, 2], 0.7);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[2, 5, 3, 2]);
        let a1 = a.slice(&[1..2, 0..1]).unwrap().reshape([3, 4]).unwrap();
        let b3 = b.slice(&[3..4]).unwrap().reshape([4, 2]).unwrap();
        let c13 = c.slice(&[1..2, 3..4]).unwrap();
        for (x, y) in c13.as_slice().iter().zip(naive(&a1, &b3)) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn blocks_match_full_product() {
        let a = iota(&[6, 5], 0.9);
        let b = iota(&[6, 4], 0.4);
        let full = a.matmul_t(&b, true, false).unwrap();
        let rows = [0..2, 4..5];
        let part = a
            .matmul_t_blocks(&b, true, false, Some(&rows), Some(&[1..3]))
            .unwrap();
        for i in 0..5 {
            for j in 0..4 {
                let inside = (i < 2 || i == 4) && (1..3).contains(&j);
                let want = if inside {
                    full.get(&[i, j]).unwrap()
                } else {
                    0.0
                };
                assert!((part.get(&[i, j]).unwrap() - want).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn row_blocks_into_match_full_product_bits() {
        for (m, k, n, ta, tb) in [
            (37, 5, 19, true, false),
            (300, 1, 64, false, false),
            (9, 130, 1, true, true),
            (1, 7, 33, false, true),
        ] {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let a = iota(&[ar, ac], 0.37);
            let b = iota(&[br, bc], 0.11);
            let full = a.matmul_t(&b, ta, tb).unwrap().to_vec();
            let mut got = vec![f64::NAN; m * n];
            let mut r0 = 0;
            while r0 < m {
                let r1 = (r0 + 16).min(m);
                a.matmul_t_rows_into(&b, ta, tb, r0..r1, &mut got[r0 * n..r1 * n])
                    .unwrap();
                r0 = r1;
            }
            assert!(
                full.iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits())
            );
        }
        let a = iota(&[4, 3], 1.0);
        let mut small = [0.0; 3];
        assert!(
            a.matmul_t_rows_into(&a, false, true, 0..1, &mut small)
                .is_err()
        );
        assert!(
            a.matmul_t_rows_into(&a, false, true, 3..5, &mut [0.0; 8])
                .is_err()
        );
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let a = Tensor::<f32>::zeros([2, 3]).unwrap();
        assert!(matches!(
            a.matmul(&a),
            Err(Error::ShapeMismatch { op: "matmul", .. })
        ));
        assert!(matches!(
            a.matmul(&Tensor::scalar(1.0)),
            Err(Error::Rank { op: "matmul", .. })
        ));
        assert!(matches!(
            Tensor::<f32>::zeros([2, 2, 3])
                .unwrap()
                .matmul(&Tensor::zeros([3, 3, 1]).unwrap()),
            Err(Error::Broadcast { op: "matmul", .. })
        ));
        assert!(matches!(
            a.matmul_t(&Tensor::zeros([3]).unwrap(), false, false),
            Err(Error::Rank { .. })
        ));
        assert!(matches!(
            a.matmul_t_blocks(&a, false, true, Some(&[1..3]), None),
            Err(Error::InvalidArgument {
                op: "matmul_t_blocks",
                ..
            })
        ));
        let msg = a.matmul(&a).unwrap_err().to_string();
        assert!(
            msg.contains("[2, 3]") && msg.contains("inner dimensions differ: 3 vs 2"),
            "{msg}"
        );
    }
}
