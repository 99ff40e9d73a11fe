//! Construction, accessors, formatting, approx comparison, seeded random.

use approx::{abs_diff_eq, assert_abs_diff_eq, assert_relative_eq, assert_ulps_eq, relative_eq};
use rime_tensor::{DType, Element, Shape, Tensor, seeded_rng};

use crate::{assert_close, both, t};

fn constructors<T: Element>() {
    let x = Tensor::<T>::from_vec(vec![T::of(1.0), T::of(2.0), T::of(3.0)], [3, 1]).unwrap();
    assert_eq!(x.dims(), &[3, 1]);
    assert_eq!((x.rank(), x.len(), x.is_empty()), (2, 3, false));
    assert_eq!(x.shape(), &Shape::from([3, 1]));
    assert_eq!(x.dtype(), T::DTYPE);
    let s = Tensor::from_slice(&[T::of(4.0)], [1, 1, 1]).unwrap();
    assert_eq!(s.to_scalar().unwrap(), T::of(4.0));
    let sc = Tensor::scalar(T::of(-2.5));
    assert_eq!((sc.rank(), sc.len(), sc.dims()), (0, 1, &[][..]));
    assert_eq!(sc.to_scalar().unwrap(), T::of(-2.5));
    assert_close(
        &Tensor::<T>::vector(vec![T::of(1.0); 2]),
        &[2],
        &[1.0, 1.0],
        0.0,
    );
    assert_close(
        &Tensor::<T>::zeros([2, 2]).unwrap(),
        &[2, 2],
        &[0.0; 4],
        0.0,
    );
    assert_close(&Tensor::<T>::ones([3]).unwrap(), &[3], &[1.0; 3], 0.0);
    assert_close(
        &Tensor::full([1, 2], T::of(7.5)).unwrap(),
        &[1, 2],
        &[7.5, 7.5],
        0.0,
    );
    assert_close(&Tensor::<T>::zeros_like(&x), &[3, 1], &[0.0; 3], 0.0);
    assert_close(&Tensor::<T>::ones_like(&x), &[3, 1], &[1.0; 3], 0.0);
    assert_close(
        &Tensor::<T>::eye(3).unwrap(),
        &[3, 3],
        &[1., 0., 0., 0., 1., 0., 0., 0., 1.],
        0.0,
    );
    assert_eq!(Tensor::<T>::eye(0).unwrap().dims(), &[0, 0]);
    // empty and rank-0 shapes
    let e = Tensor::<T>::zeros([2, 0, 3]).unwrap();
    assert!(e.is_empty());
    assert_eq!(e.to_vec(), Vec::<T>::new());
    assert_eq!(Tensor::<T>::zeros(Shape::scalar()).unwrap().len(), 1);
}
both!(constructors_f32_f64, constructors);

fn ranges<T: Element>() {
    let tl = crate::tol::<T>();
    assert_close(
        &Tensor::arange(T::of(0.0), T::of(5.0), T::of(1.0)).unwrap(),
        &[5],
        &[0., 1., 2., 3., 4.],
        0.0,
    );
    // a step that does not divide the range: the end is excluded
    assert_close(
        &Tensor::arange(T::of(1.0), T::of(2.0), T::of(0.3)).unwrap(),
        &[4],
        &[1.0, 1.3, 1.6, 1.9],
        tl,
    );
    assert_close(
        &Tensor::arange(T::of(3.0), T::of(0.0), T::of(-1.5)).unwrap(),
        &[2],
        &[3.0, 1.5],
        0.0,
    );
    assert_eq!(
        Tensor::arange(T::of(1.0), T::of(1.0), T::of(1.0))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        Tensor::arange(T::of(2.0), T::of(1.0), T::of(1.0))
            .unwrap()
            .len(),
        0
    );
    assert_close(
        &Tensor::linspace(T::of(-1.0), T::of(1.0), 5).unwrap(),
        &[5],
        &[-1.0, -0.5, 0.0, 0.5, 1.0],
        tl,
    );
    assert_close(
        &Tensor::linspace(T::of(3.0), T::of(9.0), 1).unwrap(),
        &[1],
        &[3.0],
        0.0,
    );
    assert_eq!(
        Tensor::linspace(T::of(0.0), T::of(1.0), 0).unwrap().dims(),
        &[0]
    );
    // the last point is the end exactly
    let l = Tensor::linspace(T::of(0.1), T::of(0.7), 7).unwrap();
    assert_eq!(*l.as_slice().last().unwrap(), T::of(0.7));
}
both!(arange_and_linspace, ranges);

fn accessors<T: Element>() {
    let x: Tensor<T> = t(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_eq!(x.get(&[0, 0]).unwrap(), T::of(1.0));
    assert_eq!(x.get(&[1, 2]).unwrap(), T::of(6.0));
    assert_eq!(x.get(&[1, 0]).unwrap(), T::of(4.0));
    assert_eq!(Tensor::scalar(T::of(9.0)).get(&[]).unwrap(), T::of(9.0));
    assert_eq!(x.as_slice(), &[1., 2., 3., 4., 5., 6.].map(T::of)[..]);
    assert_eq!(x.clone().into_vec(), x.to_vec());
    assert!(x.all_finite());
    assert!(!t::<T>(&[1.0, f64::NAN], &[2]).all_finite());
    assert!(!t::<T>(&[f64::INFINITY], &[1]).all_finite());
}
both!(get_and_slices, accessors);

#[test]
fn clone_shares_detach_renames_make_mut_copies() {
    let a: Tensor = t(&[1., 2.], &[2]);
    let b = a.clone();
    assert_eq!(a.id(), b.id());
    assert_eq!(
        a.as_slice().as_ptr(),
        b.as_slice().as_ptr(),
        "clone shares the buffer"
    );
    let d = a.detach();
    assert_ne!(d.id(), a.id());
    assert_eq!(
        d.as_slice().as_ptr(),
        a.as_slice().as_ptr(),
        "detach shares the buffer"
    );
    let mut c = a.clone();
    c.make_mut()[0] = 10.0;
    assert_eq!(a.to_vec(), vec![1.0, 2.0]);
    assert_eq!(c.to_vec(), vec![10.0, 2.0]);
    assert_ne!(c.id(), a.id());
    // the only handle: make_mut writes in place
    let mut u: Tensor = t(&[5.0], &[1]);
    let p = u.as_slice().as_ptr();
    u.make_mut()[0] = 6.0;
    assert_eq!(u.as_slice().as_ptr(), p);
    assert_eq!(u.to_vec(), vec![6.0]);
}

#[test]
fn equality_is_by_shape_and_value() {
    let a: Tensor = t(&[1., 2., 3., 4.], &[2, 2]);
    assert_eq!(a, t(&[1., 2., 3., 4.], &[2, 2]));
    assert_ne!(a, t(&[1., 2., 3., 4.], &[4]));
    assert_ne!(a, t(&[1., 2., 3., 5.], &[2, 2]));
    assert_ne!(t::<f32>(&[f64::NAN], &[1]), t(&[f64::NAN], &[1]));
}

#[test]
fn approx_traits_compare_values_and_require_equal_shapes() {
    let a: Tensor<f64> = t(&[1.0, 100.0], &[2]);
    let b: Tensor<f64> = t(&[1.0 + 1e-10, 100.0 + 1e-8], &[2]);
    assert_abs_diff_eq!(a, b, epsilon = 1e-7);
    assert!(!abs_diff_eq!(a, b, epsilon = 1e-9));
    assert_relative_eq!(a, b, max_relative = 1e-9);
    assert!(!relative_eq!(a, b, epsilon = 0.0, max_relative = 1e-12));
    let c: Tensor<f64> = t(&[1.0, 100.0], &[1, 2]);
    assert!(!abs_diff_eq!(a, c, epsilon = 1e9), "shapes differ");
    assert!(!relative_eq!(a, c, max_relative = 1.0));
    assert!(!approx::ulps_eq!(a, c, max_ulps = 1000));
    let next = t::<f32>(&[1.0], &[1]);
    let mut up = next.clone();
    up.make_mut()[0] = f32::from_bits(1.0f32.to_bits() + 2);
    assert_ulps_eq!(next, up, max_ulps = 2);
    assert!(!approx::ulps_eq!(next, up, max_ulps = 1));
    // NaN is never approximately equal
    let n: Tensor<f32> = t(&[f64::NAN], &[1]);
    assert!(!abs_diff_eq!(n, n.clone(), epsilon = 1.0));
}

fn random<T: Element>() {
    let shape = [50, 40];
    let u = Tensor::<T>::rand_uniform(shape, -2.0, 3.0, &mut seeded_rng(11)).unwrap();
    assert_eq!(u.dims(), &shape);
    let v = crate::f64s(&u);
    assert!(v.iter().all(|&x| (-2.0..3.0).contains(&x)));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    assert!((mean - 0.5).abs() < 0.1, "uniform mean {mean}");
    // same seed, same values; another seed, other values
    let u2 = Tensor::<T>::rand_uniform(shape, -2.0, 3.0, &mut seeded_rng(11)).unwrap();
    assert_eq!(u, u2);
    let u3 = Tensor::<T>::rand_uniform(shape, -2.0, 3.0, &mut seeded_rng(12)).unwrap();
    assert_ne!(u, u3);
    let n = Tensor::<T>::rand_normal([20000], 1.0, 2.0, &mut seeded_rng(5)).unwrap();
    let v = crate::f64s(&n);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
    assert!((mean - 1.0).abs() < 0.05, "normal mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.05, "normal std {}", var.sqrt());
    let tn = Tensor::<T>::rand_truncated_normal([5000], -1.0, 0.5, &mut seeded_rng(6)).unwrap();
    assert!(
        crate::f64s(&tn)
            .iter()
            .all(|&x| (x + 1.0).abs() <= 1.0 + 1e-6)
    );
    // one generator advances: two draws differ
    let mut rng = seeded_rng(3);
    let a = Tensor::<T>::rand_normal([8], 0.0, 1.0, &mut rng).unwrap();
    let b = Tensor::<T>::rand_normal([8], 0.0, 1.0, &mut rng).unwrap();
    assert_ne!(a, b);
    // a zero std gives the mean exactly
    let z = Tensor::<T>::rand_normal([4], 3.0, 0.0, &mut seeded_rng(0)).unwrap();
    assert_close(&z, &[4], &[3.0; 4], 0.0);
}
both!(seeded_random, random);

#[test]
fn seeds_give_the_same_numbers_in_f32_and_f64() {
    let a = Tensor::<f64>::rand_normal([64], 0.0, 1.0, &mut seeded_rng(42)).unwrap();
    let b = Tensor::<f32>::rand_normal([64], 0.0, 1.0, &mut seeded_rng(42)).unwrap();
    assert_eq!(a.cast::<f32>(), b);
    assert_eq!(DType::F32.to_string(), "f32");
    assert_eq!(b.dtype(), DType::F32);
}

#[test]
fn thread_count_follows_the_rayon_pool() {
    assert_eq!(rime_tensor::num_threads(), rayon_threads());
    fn rayon_threads() -> usize {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

#[test]
fn thread_count_inside_a_custom_pool() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    assert_eq!(pool.install(rime_tensor::num_threads), 1);
    let pool3 = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    assert_eq!(pool3.install(rime_tensor::num_threads), 3);
}
