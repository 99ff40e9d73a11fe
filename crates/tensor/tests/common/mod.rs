//! Naive reference implementations shared by the test binaries: plain
//! loops over multi-indices, written independently of the kernels.

#![allow(dead_code)]

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The multi-index of flat position `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Naive NumPy broadcasting of `f` over two operands: the reference the
/// broadcasting kernels are checked against.
pub fn naive_broadcast(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let rank = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = (0..rank)
        .map(|d| if pa[d] == 1 { pb[d] } else { pa[d] })
        .collect();
    let (ta, tb) = (strides(&pa), strides(&pb));
    let n: usize = out.iter().product();
    let vals = (0..n)
        .map(|i| {
            let idx = unravel(i, &out);
            let (mut ia, mut ib) = (0, 0);
            for d in 0..rank {
                if pa[d] != 1 {
                    ia += idx[d] * ta[d];
                }
                if pb[d] != 1 {
                    ib += idx[d] * tb[d];
                }
            }
            f(a[ia], b[ib])
        })
        .collect();
    (out, vals)
}

/// Naive reduction: groups the elements by their kept index and folds each
/// group with `f` (which sees the whole group).
pub fn naive_reduce(
    x: &[f64],
    shape: &[usize],
    axes: &[usize],
    keep_dims: bool,
    f: impl Fn(&[f64]) -> f64,
) -> (Vec<usize>, Vec<f64>) {
    let kept: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n })
        .collect();
    let n_out: usize = kept.iter().product();
    let mut groups = vec![Vec::new(); n_out];
    let ks = strides(&kept);
    for (i, &v) in x.iter().enumerate() {
        let idx = unravel(i, shape);
        let o: usize = (0..shape.len())
            .filter(|d| !axes.contains(d))
            .map(|d| idx[d] * ks[d])
            .sum();
        groups[o].push(v);
    }
    let out_shape = if keep_dims {
        kept
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .collect()
    };
    (out_shape, groups.iter().map(|g| f(g)).collect())
}

/// Naive `op(a) · op(b)` with NumPy batch broadcasting over leading axes.
pub fn naive_matmul(
    a: &[f64],
    sa: &[usize],
    b: &[f64],
    sb: &[usize],
    ta: bool,
    tb: bool,
) -> (Vec<usize>, Vec<f64>) {
    let (ra, rb) = (sa.len(), sb.len());
    let (m, k) = if ta {
        (sa[ra - 1], sa[ra - 2])
    } else {
        (sa[ra - 2], sa[ra - 1])
    };
    let n = if tb { sb[rb - 2] } else { sb[rb - 1] };
    let (ba, bb) = (&sa[..ra - 2], &sb[..rb - 2]);
    let rank = ba.len().max(bb.len());
    let pad = |s: &[usize]| {
        let mut p = vec![1; rank - s.len()];
        p.extend_from_slice(s);
        p
    };
    let (pa, pb) = (pad(ba), pad(bb));
    let batch: Vec<usize> = (0..rank)
        .map(|d| if pa[d] == 1 { pb[d] } else { pa[d] })
        .collect();
    let nb: usize = batch.iter().product();
    let (sta, stb) = (strides(&pa), strides(&pb));
    let mut out = Vec::with_capacity(nb * m * n);
    for e in 0..nb {
        let idx = unravel(e, &batch);
        let ea: usize = (0..rank)
            .map(|d| if pa[d] == 1 { 0 } else { idx[d] * sta[d] })
            .sum();
        let eb: usize = (0..rank)
            .map(|d| if pb[d] == 1 { 0 } else { idx[d] * stb[d] })
            .sum();
        let (a0, b0) = (ea * m * k, eb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let x = if ta {
                        a[a0 + p * m + i]
                    } else {
                        a[a0 + i * k + p]
                    };
                    let y = if tb {
                        b[b0 + j * k + p]
                    } else {
                        b[b0 + p * n + j]
                    };
                    s += x * y;
                }
                out.push(s);
            }
        }
    }
    let mut shape = batch;
    shape.extend([m, n]);
    (shape, out)
}
