//! Display and Debug (src/display.rs) against NumPy's layout
//! (reference/gen_display_fixtures.py wrote display_fixtures.json).

use rime_tensor::Tensor;
use serde_json::Value;

fn fixtures() -> Value {
    serde_json::from_str(include_str!("../reference/display_fixtures.json")).unwrap()
}

fn shape_text(shape: &[usize]) -> String {
    format!("{shape:?}")
}

#[test]
fn values_are_laid_out_like_numpy() {
    let f = fixtures();
    let cases = f.as_object().unwrap();
    assert!(cases.len() >= 10);
    for (name, case) in cases {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let data: Vec<f64> = case["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let numpy = case["text"].as_str().unwrap();
        let (text, dtype) = match case["dtype"].as_str().unwrap() {
            "f32" => {
                let data = data.iter().map(|&v| v as f32).collect();
                (
                    Tensor::from_vec(data, shape.as_slice())
                        .unwrap()
                        .to_string(),
                    "f32",
                )
            }
            _ => (
                Tensor::from_vec(data, shape.as_slice())
                    .unwrap()
                    .to_string(),
                "f64",
            ),
        };
        let expected = format!(
            "tensor({numpy}, shape={}, dtype={dtype})",
            shape_text(&shape)
        );
        assert_eq!(text, expected, "case {name}");
    }
}

#[test]
fn precision_notation_and_special_values() {
    let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], [2, 2]).unwrap();
    assert_eq!(
        format!("{t:.3}"),
        "tensor([[ 1.000,  2.500],\n        [-3.000,  4.000]], shape=[2, 2], dtype=f32)"
    );
    // NumPy switches to scientific when the magnitudes span more than 1e3
    // (numpy: array([1.00e-05, 1.00e+00, 1.23e+02]))
    let wide = Tensor::from_vec(vec![1e-5f64, 1.0, 123.0], [3]).unwrap();
    assert_eq!(
        wide.to_string(),
        "tensor([1.00e-05, 1.00e+00, 1.23e+02], shape=[3], dtype=f64)"
    );
    let special =
        Tensor::from_vec(vec![f32::NAN, f32::INFINITY, -1.5, f32::NEG_INFINITY], [4]).unwrap();
    // numpy: array([ nan,  inf, -1.5, -inf], dtype=float32)
    assert_eq!(
        special.to_string(),
        "tensor([ nan,  inf, -1.5, -inf], shape=[4], dtype=f32)"
    );
}

#[test]
fn empty_scalar_and_debug() {
    let e = Tensor::<f64>::from_vec(vec![], [0, 3]).unwrap();
    assert_eq!(e.to_string(), "tensor([], shape=[0, 3], dtype=f64)");
    let s = Tensor::scalar(0.25f32);
    assert_eq!(s.to_string(), "tensor(0.25, shape=[], dtype=f32)");
    assert_eq!(format!("{s:?}"), s.to_string());
    // a big tensor stays short
    let big = Tensor::from_vec(vec![0.5f32; 1000 * 1000], [1000, 1000]).unwrap();
    let text = big.to_string();
    assert!(text.len() < 600, "{}", text.len());
    assert_eq!(text.matches("...").count(), 7, "{text}");
}
