//! Optional conversions to and from other crates' types, each behind a
//! feature of the same name: `ndarray` (`ArrayD`) and `serde`.

#[cfg(feature = "ndarray")]
mod ndarray;
#[cfg(feature = "serde")]
mod serde;
