//! The optional conversions (src/interop/): ndarray's ArrayD and serde.
//! Run with `cargo test -p rime-tensor --features ndarray,serde --test interop`.
#![cfg(all(feature = "ndarray", feature = "serde"))]

use ndarray::{ArrayD, IxDyn, s};
use proptest::prelude::*;
use rime_tensor::Tensor;

#[test]
fn ndarray_round_trip_keeps_shape_and_order() {
    let t = Tensor::from_vec((0..24).map(|v| v as f32).collect(), [2, 3, 4]).unwrap();
    let a: ArrayD<f32> = (&t).into();
    assert_eq!(a.shape(), &[2, 3, 4]);
    assert_eq!(a[[1, 2, 3]], 23.0);
    assert_eq!(a[[0, 1, 2]], 6.0);
    let back = Tensor::from(a);
    assert_eq!(back.dims(), t.dims());
    assert_eq!(back.to_vec(), t.to_vec());
}

#[test]
fn ndarray_views_convert_in_logical_order() {
    let a = ndarray::Array::from_shape_vec((3, 4), (0..12).map(f64::from).collect()).unwrap();
    // a strided, transposed slice: rows 0 and 2, columns 1..3, transposed
    let view = a.slice(s![..;2, 1..3]);
    let t = Tensor::from_ndarray(&view.t());
    assert_eq!(t.dims(), &[2, 2]);
    assert_eq!(t.to_vec(), vec![1.0, 9.0, 2.0, 10.0]);
    // rank 0 and empty
    let scalar = ArrayD::from_elem(IxDyn(&[]), 2.5f32);
    assert_eq!(Tensor::from_ndarray(&scalar).to_vec(), vec![2.5]);
    let empty = ArrayD::<f32>::zeros(IxDyn(&[0, 3]));
    let t = Tensor::from_ndarray(&empty);
    assert_eq!((t.dims(), t.len()), (&[0usize, 3][..], 0));
    assert_eq!(t.to_ndarray().shape(), &[0, 3]);
}

#[test]
fn serde_round_trip_and_format() {
    let t = Tensor::from_vec(vec![0.5f64, -1.0, 3.25], [3, 1]).unwrap();
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(
        json,
        r#"{"shape":[3,1],"dtype":"f64","data":[0.5,-1.0,3.25]}"#
    );
    let back: Tensor<f64> = serde_json::from_str(&json).unwrap();
    assert_eq!((back.dims(), back.to_vec()), (t.dims(), t.to_vec()));
    let scalar: Tensor<f32> =
        serde_json::from_str(r#"{"shape":[],"dtype":"f32","data":[7.0]}"#).unwrap();
    assert_eq!((scalar.dims().len(), scalar.to_vec()), (0, vec![7.0]));
}

#[test]
fn serde_rejects_bad_data_with_a_message() {
    let cases = [
        (r#"{"shape":[2,2],"dtype":"f32","data":[1.0]}"#, "from_vec"),
        (
            r#"{"shape":[2],"dtype":"f64","data":[1.0,2.0]}"#,
            "dtype f64 cannot be read as f32",
        ),
        (
            r#"{"shape":[2],"dtype":"f32","data":[1.0,2.0],"x":1}"#,
            "unknown field",
        ),
        (
            r#"{"shape":[18446744073709551615,2],"dtype":"f32","data":[]}"#,
            "from_vec",
        ),
        (r#"{"dtype":"f32","data":[]}"#, "missing field"),
    ];
    for (json, needle) in cases {
        let err = serde_json::from_str::<Tensor<f32>>(json)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_on_random_shapes(dims in prop::collection::vec(0usize..4, 0..5), seed in 0u32..1000) {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n as u32).map(|i| ((i * 7 + seed) % 101) as f32 / 8.0 - 3.0).collect();
        let t = Tensor::from_vec(data, dims.as_slice()).unwrap();
        let via_nd = Tensor::from_ndarray(&t.to_ndarray());
        prop_assert_eq!(via_nd.dims(), t.dims());
        prop_assert_eq!(via_nd.to_vec(), t.to_vec());
        let via_json: Tensor<f32> = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        prop_assert_eq!(via_json.dims(), t.dims());
        prop_assert_eq!(via_json.to_vec(), t.to_vec());
    }
}
