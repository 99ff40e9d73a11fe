//! [`PartialShape`]: a shape whose dimensions may be unknown (Keras'
//! `(None, 28, 28, 1)`), as layers are built and models described before
//! any batch is seen.

use std::fmt;
use std::ops::Deref;

use smallvec::SmallVec;

use crate::Shape;

/// The dimensions of the tensors a layer will see, some of them unknown
/// (`None`): the batch size of a model built before any call, or a
/// variable sequence length. Keras writes `(None, 28, 28, 1)`.
///
/// A [`Shape`] is a partial shape with every dimension known; arrays of
/// sizes (`[28, 28, 1]`) and of `Option`s (`[None, Some(20)]`) convert too.
/// `PartialShape` derefs to `[Option<usize>]`.
///
/// ```
/// use rime_tensor::{PartialShape, Shape};
/// let s = PartialShape::batched([28, 28, 1]); // unknown batch + one example's shape
/// assert_eq!(s.to_string(), "(None, 28, 28, 1)");
/// assert_eq!((s.rank(), s.dim(0), s.dim(3)), (4, None, Some(1)));
/// assert_eq!(s.known(), None);
/// assert_eq!(s.with_dim(0, Some(7)).known(), Some(Shape::from([7, 28, 28, 1])));
/// assert!(s.matches(&Shape::from([5, 28, 28, 1])));
/// let words = PartialShape::from([None, None]); // (batch, variable sequence length)
/// assert_eq!(words.to_string(), "(None, None)");
/// assert_eq!(PartialShape::from([3]).to_string(), "(3,)");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct PartialShape(SmallVec<[Option<usize>; 4]>);

impl PartialShape {
    /// A partial shape from its dimensions (`None` = unknown).
    pub fn new(dims: impl IntoIterator<Item = Option<usize>>) -> Self {
        PartialShape(dims.into_iter().collect())
    }

    /// An unknown batch axis followed by the shape of one example (Keras'
    /// `Input(shape=example)` is `(None, *example)`).
    pub fn batched(example: impl Into<PartialShape>) -> Self {
        let example = example.into();
        let mut dims: SmallVec<[Option<usize>; 4]> = SmallVec::with_capacity(example.rank() + 1);
        dims.push(None);
        dims.extend_from_slice(&example.0);
        PartialShape(dims)
    }

    /// Number of axes.
    #[inline]
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The size of axis `i`: `None` if it is unknown or `i` is out of range.
    #[inline]
    pub fn dim(&self, i: usize) -> Option<usize> {
        self.0.get(i).copied().flatten()
    }

    /// The dimensions, `None` where unknown.
    #[inline]
    pub fn dims(&self) -> &[Option<usize>] {
        &self.0
    }

    /// The concrete shape, if every dimension is known.
    pub fn known(&self) -> Option<Shape> {
        self.0
            .iter()
            .copied()
            .collect::<Option<Vec<usize>>>()
            .map(Shape::from)
    }

    /// Whether every dimension is known.
    pub fn is_fully_known(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }

    /// The same shape with axis `i` set to `dim` (`i` must be in range).
    ///
    /// # Panics
    /// If `i >= self.rank()`.
    pub fn with_dim(&self, i: usize, dim: Option<usize>) -> Self {
        let mut out = self.clone();
        out.0[i] = dim;
        out
    }

    /// The shape without its first (batch) axis: one example's shape
    /// (empty for a rank-0 shape).
    pub fn example(&self) -> PartialShape {
        PartialShape(self.0.iter().skip(1).copied().collect())
    }

    /// Whether a concrete shape fits: same rank, equal wherever this one
    /// is known.
    pub fn matches(&self, shape: &Shape) -> bool {
        self.rank() == shape.rank()
            && self
                .0
                .iter()
                .zip(shape.iter())
                .all(|(p, &d)| p.is_none_or(|p| p == d))
    }

    /// The product of the dimensions, if all are known and it fits `usize`.
    pub fn numel(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul((*d)?))
    }
}

impl Deref for PartialShape {
    type Target = [Option<usize>];
    #[inline]
    fn deref(&self) -> &[Option<usize>] {
        &self.0
    }
}

impl fmt::Display for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("None")?,
            }
        }
        if self.rank() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for PartialShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Shape> for PartialShape {
    fn from(s: Shape) -> Self {
        PartialShape(s.iter().map(|&d| Some(d)).collect())
    }
}

impl From<&Shape> for PartialShape {
    fn from(s: &Shape) -> Self {
        PartialShape(s.iter().map(|&d| Some(d)).collect())
    }
}

impl From<&PartialShape> for PartialShape {
    fn from(s: &PartialShape) -> Self {
        s.clone()
    }
}

impl<const N: usize> From<[usize; N]> for PartialShape {
    fn from(d: [usize; N]) -> Self {
        PartialShape(d.iter().map(|&d| Some(d)).collect())
    }
}

impl<const N: usize> From<[Option<usize>; N]> for PartialShape {
    fn from(d: [Option<usize>; N]) -> Self {
        PartialShape(d.iter().copied().collect())
    }
}

impl From<&[usize]> for PartialShape {
    fn from(d: &[usize]) -> Self {
        PartialShape(d.iter().map(|&d| Some(d)).collect())
    }
}

impl From<&[Option<usize>]> for PartialShape {
    fn from(d: &[Option<usize>]) -> Self {
        PartialShape(d.iter().copied().collect())
    }
}

impl From<Vec<usize>> for PartialShape {
    fn from(d: Vec<usize>) -> Self {
        PartialShape(d.into_iter().map(Some).collect())
    }
}

impl From<Vec<Option<usize>>> for PartialShape {
    fn from(d: Vec<Option<usize>>) -> Self {
        PartialShape(SmallVec::from_vec(d))
    }
}

impl PartialEq<Shape> for PartialShape {
    fn eq(&self, other: &Shape) -> bool {
        self.rank() == other.rank() && self.0.iter().zip(other.iter()).all(|(p, &d)| *p == Some(d))
    }
}

/// Equal when every dimension is known and equal.
impl<const N: usize> PartialEq<[usize; N]> for PartialShape {
    fn eq(&self, other: &[usize; N]) -> bool {
        self.rank() == N && self.0.iter().zip(other).all(|(p, &d)| *p == Some(d))
    }
}

impl<const N: usize> PartialEq<[Option<usize>; N]> for PartialShape {
    fn eq(&self, other: &[Option<usize>; N]) -> bool {
        self.0.as_slice() == other
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PartialShape {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde::Serialize::serialize(self.dims(), s)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PartialShape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Vec::<Option<usize>>::deserialize(d).map(PartialShape::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_and_display() {
        assert_eq!(PartialShape::default().to_string(), "()");
        assert_eq!(PartialShape::batched([0usize; 0]).to_string(), "(None,)");
        let s = PartialShape::from(Shape::from([2, 3]));
        assert_eq!(s, Shape::from([2, 3]));
        assert_eq!(s.known(), Some(Shape::from([2, 3])));
        assert_eq!(
            PartialShape::from([None, Some(3)]).example(),
            PartialShape::from([3])
        );
        assert!(!PartialShape::from([None, Some(3)]).matches(&Shape::from([2, 4])));
        assert!(!PartialShape::from([None, Some(3)]).matches(&Shape::from([3])));
        assert_eq!(PartialShape::from([Some(2), None]).numel(), None);
        assert_eq!(PartialShape::from([usize::MAX, 2]).numel(), None);
        assert_eq!(PartialShape::from([4, 2]).numel(), Some(8));
    }
}
