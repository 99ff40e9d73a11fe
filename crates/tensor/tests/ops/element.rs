//! Integer element types (`i32`, `i64`): construction, layout, `Display`,
//! `argmax` results, index tensors, and `to_dtype` between every pair of
//! types with its checked failures.

use rime_tensor::{DType, Error, Scalar, Tensor};

fn ints<T: Scalar>() {
    let x = Tensor::<T>::from_vec(
        (0..6).map(|v| T::from(v * 3 - 5).unwrap()).collect(),
        [2, 3],
    )
    .unwrap();
    assert_eq!(x.dims(), &[2, 3]);
    assert_eq!(
        Tensor::<T>::zeros([2]).unwrap().to_vec(),
        vec![T::zero(); 2]
    );
    assert_eq!(Tensor::<T>::eye(2).unwrap().get(&[1, 1]).unwrap(), T::one());
    let back: Vec<i64> = x
        .t()
        .unwrap()
        .as_slice()
        .iter()
        .map(|v| v.to_i64().unwrap())
        .collect();
    assert_eq!(back, vec![-5, 4, -2, 7, 1, 10]);
    let picked = x.index_select(1, &[2, 0]).unwrap();
    let got: Vec<i64> = picked
        .as_slice()
        .iter()
        .map(|v| v.to_i64().unwrap())
        .collect();
    assert_eq!(got, vec![1, -5, 10, 4]);
    let c = Tensor::concat(&[&x, &x], 0).unwrap();
    assert_eq!(c.narrow(0, 2, 2).unwrap(), x);
    assert_eq!(x.to_dtype::<f64>().unwrap().to_dtype::<T>().unwrap(), x);
}

#[test]
fn integer_tensors_take_the_layout_and_index_ops() {
    ints::<i32>();
    ints::<i64>();
    assert_eq!(Tensor::scalar(1i32).dtype(), DType::I32);
    assert_eq!(Tensor::scalar(1i64).dtype(), DType::I64);
    assert!(!DType::I32.is_float() && DType::F64.is_float());
    // an integer table gathered by integer ids
    let table = Tensor::from_vec(vec![10i64, 11, 20, 21, 30, 31], [3, 2]).unwrap();
    let ids = Tensor::from_vec(vec![2i32, 2, 0], [3]).unwrap();
    assert_eq!(
        table.gather(0, &ids).unwrap().to_vec(),
        vec![30, 31, 30, 31, 10, 11]
    );
}

#[test]
fn integer_display_is_right_aligned() {
    let t = Tensor::from_vec(vec![1i32, -20, 300, 4], [2, 2]).unwrap();
    assert_eq!(
        t.to_string(),
        "tensor([[  1, -20],\n        [300,   4]], shape=[2, 2], dtype=i32)"
    );
    assert_eq!(
        format!("{:?}", Tensor::<i64>::zeros([0]).unwrap()),
        "tensor([], shape=[0], dtype=i64)"
    );
    assert_eq!(
        Tensor::scalar(7i64).to_string(),
        "tensor(7, shape=[], dtype=i64)"
    );
    let big = Tensor::from_vec((0..2000i64).collect(), [2000]).unwrap();
    assert_eq!(
        big.to_string(),
        "tensor([   0,    1,    2, ..., 1997, 1998, 1999], shape=[2000], dtype=i64)"
    );
}

#[test]
fn argmax_gives_i64_indices() {
    let x = Tensor::from_vec(vec![0.1f32, 0.9, 0.3, 0.7, 0.2, 0.1], [2, 3]).unwrap();
    let i: Tensor<i64> = x.argmax(-1, false).unwrap();
    assert_eq!((i.dims(), i.to_vec()), (&[2][..], vec![1, 0]));
    assert_eq!(x.argmin(0, true).unwrap().to_vec(), vec![0, 1, 1]);
    assert_eq!(x.argmax_indices(-1).unwrap(), vec![1, 0]);
    // argmax feeds one_hot and gather directly
    let hot = Tensor::<f32>::one_hot(&i, 3).unwrap();
    assert_eq!(hot.to_vec(), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn to_dtype_converts_every_pair_and_checks_lossy_ones() {
    let f = Tensor::vector(vec![-2.75f64, 0.0, 3.5, 1e3]);
    assert_eq!(f.to_dtype::<i64>().unwrap().to_vec(), vec![-2, 0, 3, 1000]);
    assert_eq!(f.to_dtype::<i32>().unwrap().to_vec(), vec![-2, 0, 3, 1000]);
    assert_eq!(
        f.to_dtype::<f32>().unwrap().to_vec(),
        vec![-2.75f32, 0.0, 3.5, 1e3]
    );
    assert_eq!(
        f.to_dtype::<f64>().unwrap().id(),
        f.id(),
        "same type: the same tensor"
    );
    let i = Tensor::vector(vec![i64::MAX, -1, (1 << 24) + 1]);
    // integers to floats round to nearest
    assert_eq!(
        i.to_dtype::<f32>().unwrap().to_vec(),
        vec![9.223372e18f32, -1.0, 16777216.0]
    );
    assert_eq!(i.to_dtype::<f64>().unwrap().to_vec()[2], 16777217.0);
    // out of range: a typed error naming the op, the value, the shape and the type
    for (bad, needle) in [
        // -2.75e7 fits, 1e10 does not
        (f.mul_scalar(1e7).to_dtype::<i32>().map(drop), "10000000000"),
        (
            Tensor::from_vec(vec![f64::NAN], [1, 1])
                .unwrap()
                .to_dtype::<i64>()
                .map(drop),
            "NaN",
        ),
        (
            Tensor::vector(vec![f64::INFINITY])
                .to_dtype::<i32>()
                .map(drop),
            "inf",
        ),
        (
            Tensor::vector(vec![1e19f64]).to_dtype::<i64>().map(drop),
            "10000000000000000000",
        ),
    ] {
        match bad {
            Err(e @ Error::InvalidArgument { op: "to_dtype", .. }) => {
                assert!(e.to_string().contains(needle), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    let e = i.to_dtype::<i32>().unwrap_err().to_string();
    assert!(
        e.contains("9223372036854775807") && e.contains("[3]") && e.contains("i32"),
        "{e}"
    );
    assert_eq!(
        Tensor::vector(vec![-7i32, 9])
            .to_dtype::<i64>()
            .unwrap()
            .to_vec(),
        vec![-7, 9]
    );
    assert_eq!(
        Tensor::vector(vec![2i64, 3])
            .to_dtype::<i32>()
            .unwrap()
            .to_vec(),
        vec![2, 3]
    );
}
