//! `Serialize`/`Deserialize` for `Tensor` (feature `serde`): a map of
//! `shape`, `dtype` and the row-major `data`. Deserializing checks that the
//! dtype is the tensor's element type and that the data fills the shape.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Scalar, Tensor};

#[derive(Serialize)]
struct TensorRef<'a, T> {
    shape: &'a [usize],
    dtype: String,
    data: &'a [T],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorData<T> {
    shape: Vec<usize>,
    dtype: String,
    data: Vec<T>,
}

/// ```
/// use rime_tensor::Tensor;
/// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
/// let json = serde_json::to_string(&t).unwrap();
/// assert_eq!(json, r#"{"shape":[2,2],"dtype":"f32","data":[1.0,2.0,3.0,4.0]}"#);
/// let back: Tensor<f32> = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.to_vec(), t.to_vec());
/// assert!(serde_json::from_str::<Tensor<f64>>(&json).is_err()); // dtype f32, not f64
/// # Ok::<(), rime_tensor::Error>(())
/// ```
impl<T: Scalar + Serialize> Serialize for Tensor<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TensorRef {
            shape: self.dims(),
            dtype: T::DTYPE.to_string(),
            data: self.as_slice(),
        }
        .serialize(serializer)
    }
}

impl<'de, T: Scalar + Deserialize<'de>> Deserialize<'de> for Tensor<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = TensorData::<T>::deserialize(deserializer)?;
        let expected = T::DTYPE.to_string();
        if raw.dtype != expected {
            return Err(D::Error::custom(format!(
                "tensor of dtype {} cannot be read as {expected}",
                raw.dtype
            )));
        }
        Tensor::from_vec(raw.data, raw.shape).map_err(D::Error::custom)
    }
}
