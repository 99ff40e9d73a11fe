//! Shape and layout ops, casts, and gather/scatter, against index arithmetic.

use std::ops::Range;

use rime_tensor::{Element, Shape, Tensor};

use crate::{assert_close, both, f64s, iota, t, unravel};

fn reshape_family<T: Element>() {
    let x: Tensor<T> = iota(&[2, 3, 4], 1);
    let xv = f64s(&x);
    let r = x.reshape([4, 6]).unwrap();
    assert_close(&r, &[4, 6], &xv, 0.0);
    assert_close(&x.reshape([24]).unwrap(), &[24], &xv, 0.0);
    assert_close(&x.flatten_from(1).unwrap(), &[2, 12], &xv, 0.0);
    assert_close(&x.flatten_from(0).unwrap(), &[24], &xv, 0.0);
    assert_close(&x.flatten_from(3).unwrap(), &[2, 3, 4, 1], &xv, 0.0);
    assert_close(&x.unsqueeze(1).unwrap(), &[2, 1, 3, 4], &xv, 0.0);
    assert_close(&x.unsqueeze(-1).unwrap(), &[2, 3, 4, 1], &xv, 0.0);
    assert_close(&x.unsqueeze(-4).unwrap(), &[1, 2, 3, 4], &xv, 0.0);
    let o: Tensor<T> = iota(&[1, 3, 1, 2], 2);
    let ov = f64s(&o);
    assert_close(&o.squeeze(&[]).unwrap(), &[3, 2], &ov, 0.0);
    assert_close(&o.squeeze(&[0]).unwrap(), &[3, 1, 2], &ov, 0.0);
    assert_close(&o.squeeze(&[-2, 0]).unwrap(), &[3, 2], &ov, 0.0);
    // rank 0 <-> [1] <-> [1, 1]
    let s = Tensor::scalar(T::of(3.0));
    assert_close(&s.reshape([1, 1]).unwrap(), &[1, 1], &[3.0], 0.0);
    assert_close(&s.unsqueeze(0).unwrap(), &[1], &[3.0], 0.0);
    assert_close(
        &s.reshape([1]).unwrap().squeeze(&[]).unwrap(),
        &[],
        &[3.0],
        0.0,
    );
    assert_close(&s.squeeze(&[]).unwrap(), &[], &[3.0], 0.0);
    // empty tensors reshape among empty shapes
    assert_eq!(
        Tensor::<T>::zeros([0, 3])
            .unwrap()
            .reshape([3, 0, 5])
            .unwrap()
            .dims(),
        &[3, 0, 5]
    );
    // reshape shares the buffer
    assert_eq!(r.as_slice().as_ptr(), x.as_slice().as_ptr());
}
both!(reshape_squeeze_unsqueeze_flatten, reshape_family);

fn permutes<T: Element>() {
    let shape = [2, 3, 4, 5];
    let x: Tensor<T> = iota(&shape, 3);
    let xv = f64s(&x);
    for perm in [
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [1, 0, 3, 2],
        [2, 0, 3, 1],
        [0, 1, 3, 2],
    ] {
        let y = x.permute(&perm).unwrap();
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let n = xv.len();
        let xs = crate::strides(&shape);
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let idx = unravel(i, &out);
                let src: usize = (0..4).map(|j| idx[j] * xs[perm[j]]).sum();
                xv[src]
            })
            .collect();
        assert_close(&y, &out, &want, 0.0);
    }
    let m: Tensor<T> = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_close(&m.t().unwrap(), &[3, 2], &[1., 4., 2., 5., 3., 6.], 0.0);
    assert_close(
        &m.transpose(0, 1).unwrap(),
        &[3, 2],
        &[1., 4., 2., 5., 3., 6.],
        0.0,
    );
    assert_close(
        &m.transpose(-1, -1).unwrap(),
        &[2, 3],
        &[1., 2., 3., 4., 5., 6.],
        0.0,
    );
    let b = x.t().unwrap();
    assert_eq!(b.dims(), &[2, 3, 5, 4]);
    assert_eq!(b.get(&[1, 2, 4, 3]).unwrap(), x.get(&[1, 2, 3, 4]).unwrap());
    assert_eq!(
        x.transpose(0, 2).unwrap(),
        x.permute(&[2, 1, 0, 3]).unwrap()
    );
    // rank 0 and rank 1 permutations are identities
    let s = Tensor::scalar(T::one());
    assert_eq!(s.permute(&[]).unwrap(), s);
    let v: Tensor<T> = t(&[1., 2.], &[2]);
    assert_eq!(v.permute(&[0]).unwrap(), v);
}
both!(permute_and_transpose, permutes);

fn broadcast_to<T: Element>() {
    let x: Tensor<T> = t(&[1., 2., 3.], &[3, 1]);
    assert_close(
        &x.broadcast_to([3, 2]).unwrap(),
        &[3, 2],
        &[1., 1., 2., 2., 3., 3.],
        0.0,
    );
    assert_close(
        &x.broadcast_to([2, 3, 2]).unwrap(),
        &[2, 3, 2],
        &[1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.],
        0.0,
    );
    assert_close(
        &x.broadcast_to([3, 1]).unwrap(),
        &[3, 1],
        &[1., 2., 3.],
        0.0,
    );
    assert_close(&x.broadcast_to([3, 0]).unwrap(), &[3, 0], &[], 0.0);
    let s = Tensor::scalar(T::of(4.0));
    assert_close(&s.broadcast_to([2, 2]).unwrap(), &[2, 2], &[4.0; 4], 0.0);
    assert_close(&s.broadcast_to(Shape::scalar()).unwrap(), &[], &[4.0], 0.0);
    let r: Tensor<T> = t(&[1., 2.], &[2]);
    assert_close(
        &r.broadcast_to([3, 2]).unwrap(),
        &[3, 2],
        &[1., 2., 1., 2., 1., 2.],
        0.0,
    );
}
both!(broadcast_to_materializes, broadcast_to);

fn joins<T: Element>() {
    let a: Tensor<T> = t(&[1., 2., 3., 4.], &[2, 2]);
    let b: Tensor<T> = t(&[5., 6.], &[2, 1]);
    let c: Tensor<T> = t(&[7., 8.], &[1, 2]);
    assert_close(
        &Tensor::concat(&[&a, &b], 1).unwrap(),
        &[2, 3],
        &[1., 2., 5., 3., 4., 6.],
        0.0,
    );
    assert_close(
        &Tensor::concat(&[&a, &c], 0).unwrap(),
        &[3, 2],
        &[1., 2., 3., 4., 7., 8.],
        0.0,
    );
    assert_close(
        &Tensor::concat(&[&a, &c, &a], -2).unwrap(),
        &[5, 2],
        &[1., 2., 3., 4., 7., 8., 1., 2., 3., 4.],
        0.0,
    );
    assert_close(
        &Tensor::concat(&[&a], 0).unwrap(),
        &[2, 2],
        &[1., 2., 3., 4.],
        0.0,
    );
    // empty pieces
    let e = Tensor::<T>::zeros([2, 0]).unwrap();
    assert_close(
        &Tensor::concat(&[&e, &b, &e], 1).unwrap(),
        &[2, 1],
        &[5., 6.],
        0.0,
    );
    // stack
    let v: Tensor<T> = t(&[1., 2., 3.], &[3]);
    let w: Tensor<T> = t(&[4., 5., 6.], &[3]);
    assert_close(
        &Tensor::stack(&[&v, &w], 0).unwrap(),
        &[2, 3],
        &[1., 2., 3., 4., 5., 6.],
        0.0,
    );
    assert_close(
        &Tensor::stack(&[&v, &w], 1).unwrap(),
        &[3, 2],
        &[1., 4., 2., 5., 3., 6.],
        0.0,
    );
    assert_close(
        &Tensor::stack(&[&v, &w], -1).unwrap(),
        &[3, 2],
        &[1., 4., 2., 5., 3., 6.],
        0.0,
    );
    let s1 = Tensor::scalar(T::one());
    let s2 = Tensor::scalar(T::of(2.0));
    assert_close(
        &Tensor::stack(&[&s1, &s2], 0).unwrap(),
        &[2],
        &[1., 2.],
        0.0,
    );
    // split is concat's inverse
    let x: Tensor<T> = iota(&[3, 5, 2], 4);
    let parts = x.split(&[1, 0, 3, 1], 1).unwrap();
    assert_eq!(
        parts.iter().map(|p| p.dims()[1]).collect::<Vec<_>>(),
        vec![1, 0, 3, 1]
    );
    assert_eq!(parts[2], x.slice(&[0..3, 1..4]).unwrap());
    let refs: Vec<&Tensor<T>> = parts.iter().collect();
    assert_eq!(Tensor::concat(&refs, 1).unwrap(), x);
    let halves = x.split(&[2, 1], -3).unwrap();
    assert_eq!(halves[1], x.narrow(0, 2, 1).unwrap());
}
both!(concat_stack_split, joins);

fn slices<T: Element>() {
    let shape = [4, 5, 3];
    let x: Tensor<T> = iota(&shape, 5);
    let xv = f64s(&x);
    let cases: Vec<Vec<Range<usize>>> = vec![
        vec![1..3, 0..5, 0..3],
        vec![0..4, 2..3],
        vec![3..4],
        vec![],
        vec![0..0, 1..2],
        vec![1..4, 1..5, 2..3],
    ];
    for ranges in cases {
        let full: Vec<Range<usize>> = (0..3)
            .map(|d| ranges.get(d).cloned().unwrap_or(0..shape[d]))
            .collect();
        let out: Vec<usize> = full.iter().map(|r| r.len()).collect();
        let xs = crate::strides(&shape);
        let n: usize = out.iter().product();
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let idx = unravel(i, &out);
                xv[(0..3)
                    .map(|d| (full[d].start + idx[d]) * xs[d])
                    .sum::<usize>()]
            })
            .collect();
        assert_close(&x.slice(&ranges).unwrap(), &out, &want, 0.0);
    }
    assert_eq!(x.narrow(1, 1, 3).unwrap(), x.slice(&[0..4, 1..4]).unwrap());
    assert_eq!(
        x.narrow(-1, 2, 1).unwrap(),
        x.slice(&[0..4, 0..5, 2..3]).unwrap()
    );
    assert_eq!(x.narrow(0, 4, 0).unwrap().dims(), &[0, 5, 3]);
    // pad places the tensor inside zeros
    let m: Tensor<T> = t(&[1., 2., 3., 4.], &[2, 2]);
    assert_close(
        &m.pad(&[(1, 0), (0, 2)]).unwrap(),
        &[3, 4],
        &[0., 0., 0., 0., 1., 2., 0., 0., 3., 4., 0., 0.],
        0.0,
    );
    assert_close(
        &m.pad(&[(0, 1)]).unwrap(),
        &[3, 2],
        &[1., 2., 3., 4., 0., 0.],
        0.0,
    );
    assert_eq!(m.pad(&[]).unwrap(), m);
    // slicing a padded tensor gives the original back
    let p = x.pad(&[(2, 1), (0, 0), (1, 1)]).unwrap();
    assert_eq!(p.slice(&[2..6, 0..5, 1..4]).unwrap(), x);
}
both!(slice_narrow_pad, slices);

#[test]
fn casts_between_f32_and_f64() {
    let x =
        Tensor::<f64>::from_vec(vec![0.1, -1.5, 1e300, f64::NAN, f64::NEG_INFINITY], [5]).unwrap();
    let y: Tensor<f32> = x.cast();
    assert_eq!(y.dims(), &[5]);
    assert_eq!(y.as_slice()[0], 0.1f32);
    assert_eq!(y.as_slice()[1], -1.5);
    assert_eq!(y.as_slice()[2], f32::INFINITY);
    assert!(y.as_slice()[3].is_nan());
    assert_eq!(y.as_slice()[4], f32::NEG_INFINITY);
    let back: Tensor<f64> = y.cast();
    assert_eq!(back.as_slice()[0], 0.1f32 as f64);
    let same: Tensor<f32> = y.cast();
    assert_eq!(&same.as_slice()[..3], &y.as_slice()[..3]);
    let m = Tensor::<f32>::ones([2, 0, 3]).unwrap().cast::<f64>();
    assert_eq!(m.dims(), &[2, 0, 3]);
}

fn gathers<T: Element>() {
    let table: Tensor<T> = iota(&[5, 3], 6);
    let tv = f64s(&table);
    let picked = table.index_select(0, &[4, 0, 4, 2]).unwrap();
    let want: Vec<f64> = [4usize, 0, 4, 2]
        .iter()
        .flat_map(|&r| tv[r * 3..r * 3 + 3].to_vec())
        .collect();
    assert_close(&picked, &[4, 3], &want, 0.0);
    let cols = table.index_select(-1, &[2, 2, 0]).unwrap();
    let want: Vec<f64> = (0..5)
        .flat_map(|r| [tv[r * 3 + 2], tv[r * 3 + 2], tv[r * 3]])
        .collect();
    assert_close(&cols, &[5, 3], &want, 0.0);
    assert_eq!(table.index_select(0, &[]).unwrap().dims(), &[0, 3]);
    // gather: an embedding lookup with a [2, 2] index array
    let ids = Tensor::from_vec(vec![1i64, 3, 3, 0], [2, 2]).unwrap();
    let emb = table.gather(0, &ids).unwrap();
    assert_eq!(emb.dims(), &[2, 2, 3]);
    assert_eq!(emb.get(&[1, 0, 2]).unwrap(), table.get(&[3, 2]).unwrap());
    assert_eq!(emb.get(&[1, 1, 1]).unwrap(), table.get(&[0, 1]).unwrap());
    // a rank-0 index array picks one entry and drops the axis
    let one = table.gather(1, &Tensor::scalar(2i32)).unwrap();
    assert_close(
        &one,
        &[5],
        &(0..5).map(|r| tv[r * 3 + 2]).collect::<Vec<_>>(),
        0.0,
    );
    // scatter_add accumulates repeats
    let base: Tensor<T> = t(&[1., 1., 1., 1.], &[4, 1]);
    let src: Tensor<T> = t(&[1., 2., 3.], &[3, 1]);
    assert_close(
        &base.scatter_add(0, &[3, 0, 3], &src).unwrap(),
        &[4, 1],
        &[3., 1., 1., 5.],
        0.0,
    );
    let base = Tensor::<T>::zeros([2, 3]).unwrap();
    let src: Tensor<T> = t(&[1., 2., 3., 4.], &[2, 2]);
    assert_close(
        &base.scatter_add(1, &[2, 2], &src).unwrap(),
        &[2, 3],
        &[0., 0., 3., 0., 0., 7.],
        0.0,
    );
    // scatter_add of index_select(x) with ones counts the picks
    let counts = Tensor::<T>::zeros([5])
        .unwrap()
        .scatter_add(0, &[1, 1, 4], &Tensor::ones([3]).unwrap())
        .unwrap();
    assert_close(&counts, &[5], &[0., 2., 0., 0., 1.], 0.0);
    // one_hot
    assert_close(
        &Tensor::<T>::one_hot(&[1, 0], 3).unwrap(),
        &[2, 3],
        &[0., 1., 0., 1., 0., 0.],
        0.0,
    );
    assert_eq!(Tensor::<T>::one_hot(&[], 4).unwrap().dims(), &[0, 4]);
}
both!(index_select_gather_scatter_one_hot, gathers);
