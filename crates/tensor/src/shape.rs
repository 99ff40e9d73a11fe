//! [`Shape`]: the dimensions of a tensor, and the shape arithmetic ops share
//! (NumPy broadcasting, axis normalisation, strides).

use std::fmt;
use std::ops::Deref;

use smallvec::SmallVec;

use crate::{Error, Result};

/// Inline capacity: tensors of rank <= 4 keep their shape off the heap.
pub(crate) type Dims = SmallVec<[usize; 4]>;

/// The dimensions of a tensor, outermost first (row-major).
///
/// A rank-0 shape (`[]`) is a scalar. `Shape` derefs to `[usize]`, and
/// converts from arrays, slices and vectors.
///
/// ```
/// use rime_tensor::Shape;
/// let s = Shape::from([2, 3, 4]);
/// assert_eq!(s.rank(), 3);
/// assert_eq!(s.numel(), 24);
/// assert_eq!(&s[..], &[2, 3, 4]);
/// assert_eq!(format!("{s}"), "[2, 3, 4]");
/// ```
#[derive(Eq, Default)]
pub struct Shape(pub(crate) Dims);

// Compared and cloned inline: shapes are short and every op compares or
// clones some (calls to `memcmp` and `SmallVec::extend` cost more than the
// work itself).
impl PartialEq for Shape {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0[..], &other.0[..]);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
    }
}

impl std::hash::Hash for Shape {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state); // consistent with `eq`: the dimensions
    }
}

impl Clone for Shape {
    #[inline]
    fn clone(&self) -> Self {
        let buf = match self.0[..] {
            [] => [0; 4],
            [a] => [a, 0, 0, 0],
            [a, b] => [a, b, 0, 0],
            [a, b, c] => [a, b, c, 0],
            [a, b, c, d] => [a, b, c, d],
            _ => return Shape(self.0.clone()),
        };
        Shape(Dims::from_buf_and_len(buf, self.0.len()))
    }
}

impl Shape {
    /// The rank-0 (scalar) shape.
    pub fn scalar() -> Self {
        Shape(Dims::new())
    }

    /// Number of axes.
    #[inline]
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Number of elements (1 for a scalar).
    #[inline]
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }

    /// Number of elements, or `None` if it overflows `usize` (a shape no
    /// buffer can hold).
    ///
    /// ```
    /// use rime_tensor::Shape;
    /// assert_eq!(Shape::from([2, 3]).checked_numel(), Some(6));
    /// assert_eq!(Shape::from([usize::MAX, 2]).checked_numel(), None);
    /// ```
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// The number of elements of a `T` buffer of this shape, validated with
    /// checked arithmetic: the product of the dimensions (zero dimensions
    /// counted as 1, so every row-major stride fits too) times
    /// `size_of::<T>()` must fit in `isize::MAX` bytes. Every constructor and
    /// op that sizes a buffer from a shape goes through this check first.
    ///
    /// ```
    /// use rime_tensor::{Error, Shape};
    /// assert_eq!(Shape::from([2, 3]).checked_len::<f32>("zeros")?, 6);
    /// assert_eq!(Shape::from([0, 1 << 20]).checked_len::<f32>("zeros")?, 0);
    /// let huge = Shape::from([(1 << 63) + 1, 2]);
    /// assert!(matches!(huge.checked_len::<f32>("zeros"), Err(Error::ShapeOverflow { op: "zeros", .. })));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn checked_len<T>(&self, op: &'static str) -> Result<usize> {
        let elem = std::mem::size_of::<T>().max(1);
        let limit = isize::MAX as usize / elem;
        let mut strided = 1usize;
        let mut numel = 1usize;
        for &d in self.0.iter() {
            strided = match strided.checked_mul(d.max(1)) {
                Some(s) if s <= limit => s,
                _ => {
                    return Err(Error::ShapeOverflow {
                        op,
                        shape: self.clone(),
                    });
                }
            };
            numel *= d;
        }
        Ok(numel)
    }

    /// The dimensions as a slice.
    #[inline]
    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    /// Row-major strides, in elements.
    ///
    /// ```
    /// use rime_tensor::Shape;
    /// assert_eq!(&Shape::from([2, 3, 4]).strides()[..], &[12, 4, 1]);
    /// ```
    pub fn strides(&self) -> SmallVec<[usize; 4]> {
        let mut s: SmallVec<[usize; 4]> = SmallVec::from_elem(0, self.rank());
        let mut acc = 1;
        for i in (0..self.rank()).rev() {
            s[i] = acc;
            acc *= self.0[i];
        }
        s
    }

    /// Resolves a possibly negative axis (`-1` is the last) against this rank.
    ///
    /// ```
    /// use rime_tensor::Shape;
    /// assert_eq!(Shape::from([2, 3]).axis("sum", -1).unwrap(), 1);
    /// assert!(Shape::from([2, 3]).axis("sum", 2).is_err());
    /// ```
    pub fn axis(&self, op: &'static str, axis: isize) -> Result<usize> {
        normalize_axis(op, axis, self.rank())
    }

    /// Resolves a list of axes: sorted, deduplicated, each in range.
    /// An empty list means every axis.
    pub fn axes(&self, op: &'static str, axes: &[isize]) -> Result<SmallVec<[usize; 4]>> {
        if axes.is_empty() {
            return Ok((0..self.rank()).collect());
        }
        let mut out: SmallVec<[usize; 4]> = SmallVec::new();
        for &a in axes {
            let a = self.axis(op, a)?;
            if out.contains(&a) {
                return Err(Error::InvalidArgument {
                    op,
                    msg: format!("axis {a} given twice in {axes:?} for shape {self}"),
                });
            }
            out.push(a);
        }
        out.sort_unstable();
        Ok(out)
    }
}

pub(crate) fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        Err(Error::InvalidAxis { op, axis, rank })
    } else {
        Ok(a as usize)
    }
}

/// The NumPy broadcast of two shapes, or an error naming `op` and both shapes.
///
/// ```
/// use rime_tensor::{broadcast_shapes, Shape};
/// let s = broadcast_shapes("add", &Shape::from([4, 1, 3]), &Shape::from([5, 1])).unwrap();
/// assert_eq!(&s[..], &[4, 5, 3]);
/// assert!(broadcast_shapes("add", &Shape::from([2]), &Shape::from([3])).is_err());
/// ```
pub fn broadcast_shapes(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
    if a == b {
        return Ok(a.clone());
    }
    let rank = a.rank().max(b.rank());
    let mut out: Dims = SmallVec::from_elem(0, rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank {
            a.0[i + a.rank() - rank]
        } else {
            1
        };
        let db = if i + b.rank() >= rank {
            b.0[i + b.rank() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::Broadcast {
                op,
                lhs: a.clone(),
                rhs: b.clone(),
            });
        };
    }
    let out = Shape(out);
    // zero-size operands can broadcast to a shape with huge dimensions
    out.checked_len::<u8>(op)?;
    Ok(out)
}

/// Strides of `from` when read in the index space of the broadcast shape `to`
/// (0 along broadcast axes). `from` must broadcast to `to`.
pub(crate) fn broadcast_strides(from: &Shape, to: &Shape) -> SmallVec<[usize; 4]> {
    let own = from.strides();
    let off = to.rank() - from.rank();
    (0..to.rank())
        .map(|i| {
            if i < off || from.0[i - off] == 1 {
                0
            } else {
                own[i - off]
            }
        })
        .collect()
}

impl Deref for Shape {
    type Target = [usize];
    #[inline]
    fn deref(&self) -> &[usize] {
        &self.0
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.iter().copied().collect())
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.iter().copied().collect())
    }
}

impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(d: &[usize; N]) -> Self {
        Shape(d.iter().copied().collect())
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(Dims::from_vec(d))
    }
}

impl From<&Vec<usize>> for Shape {
    fn from(d: &Vec<usize>) -> Self {
        Shape(d.iter().copied().collect())
    }
}

impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

impl From<SmallVec<[usize; 4]>> for Shape {
    fn from(d: SmallVec<[usize; 4]>) -> Self {
        Shape(d)
    }
}

impl PartialEq<[usize]> for Shape {
    fn eq(&self, other: &[usize]) -> bool {
        self.0.as_slice() == other
    }
}

impl<const N: usize> PartialEq<[usize; N]> for Shape {
    fn eq(&self, other: &[usize; N]) -> bool {
        self.0.as_slice() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        let b = |a: &[usize], c: &[usize]| broadcast_shapes("t", &a.into(), &c.into());
        assert_eq!(b(&[], &[3]).unwrap(), [3]);
        assert_eq!(b(&[2, 1], &[1, 3]).unwrap(), [2, 3]);
        assert_eq!(b(&[3], &[2, 1]).unwrap(), [2, 3]);
        assert_eq!(b(&[0], &[1]).unwrap(), [0]);
        assert!(matches!(
            b(&[2], &[3]),
            Err(Error::Broadcast { op: "t", .. })
        ));
    }

    /// The hand-written clone, equality and hash agree with the dimensions,
    /// inline (rank <= 4) and spilled.
    #[test]
    fn clone_eq_hash_by_dims() {
        use std::hash::{BuildHasher, RandomState};
        let h = RandomState::new();
        for rank in 0..7 {
            let dims: Vec<usize> = (1..=rank).collect();
            let s = Shape::from(dims.as_slice());
            let c = s.clone();
            assert_eq!(&c[..], &dims[..]);
            assert!(c == s && h.hash_one(&c) == h.hash_one(&s));
            let mut other = dims.clone();
            other.push(1);
            let longer = Shape::from(other.as_slice());
            assert!(longer != s, "rank differs");
            if rank > 0 {
                other.truncate(rank);
                other[rank - 1] += 1;
                let changed = Shape::from(other.as_slice());
                assert!(changed != s, "a dimension differs");
            }
        }
    }

    #[test]
    fn strides_of_broadcast() {
        let s = broadcast_strides(&Shape::from([3, 1]), &Shape::from([2, 3, 4]));
        assert_eq!(&s[..], &[0, 1, 0]);
    }

    #[test]
    fn axes_are_checked() {
        let s = Shape::from([2, 3, 4]);
        assert_eq!(&s.axes("sum", &[-1, 0]).unwrap()[..], &[0, 2]);
        assert_eq!(&s.axes("sum", &[]).unwrap()[..], &[0, 1, 2]);
        assert!(matches!(
            s.axes("sum", &[0, -3]),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            s.axes("sum", &[3]),
            Err(Error::InvalidAxis {
                axis: 3,
                rank: 3,
                ..
            })
        ));
    }
}
