//! The error every fallible tensor op returns.

use crate::Shape;

/// What went wrong in a tensor op. Every variant names the op (`op`) and the
/// shapes or arguments involved, so the message alone locates the mistake.
///
/// ```
/// use rime_tensor::{Error, Tensor};
/// let a = Tensor::<f32>::zeros([2, 3]).unwrap();
/// let b = Tensor::<f32>::zeros([4]).unwrap();
/// let err = a.add(&b).unwrap_err();
/// assert!(matches!(err, Error::Broadcast { op: "add", .. }));
/// assert_eq!(err.to_string(), "add: shapes [2, 3] and [4] cannot be broadcast together");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that NumPy's rules cannot broadcast together.
    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    Broadcast {
        /// The op.
        op: &'static str,
        /// Left operand's shape.
        lhs: Shape,
        /// Right operand's shape.
        rhs: Shape,
    },
    /// Operands whose shapes do not fit the op (matmul inner dims, concat...).
    #[error("{op}: incompatible shapes {lhs} and {rhs}: {msg}")]
    ShapeMismatch {
        /// The op.
        op: &'static str,
        /// First shape involved.
        lhs: Shape,
        /// Second shape involved.
        rhs: Shape,
        /// What the op needed.
        msg: String,
    },
    /// A data buffer whose length does not match the shape.
    #[error(
        "{op}: {len} elements cannot have shape {shape} ({} elements)",
        numel_text(shape)
    )]
    DataLength {
        /// The op.
        op: &'static str,
        /// The requested shape.
        shape: Shape,
        /// The number of elements given.
        len: usize,
    },
    /// A reshape to a shape with a different number of elements.
    #[error("{op}: cannot reshape {from} into {to}")]
    Reshape {
        /// The op.
        op: &'static str,
        /// The tensor's shape.
        from: Shape,
        /// The requested shape.
        to: Shape,
    },
    /// An axis outside `-rank..rank`.
    #[error("{op}: axis {axis} is out of range for rank {rank}")]
    InvalidAxis {
        /// The op.
        op: &'static str,
        /// The axis given.
        axis: isize,
        /// The tensor's rank.
        rank: usize,
    },
    /// An index outside `0..size` along an axis (negative entries of an
    /// integer index tensor included).
    #[error("{op}: index {index} is out of bounds for axis {axis} of size {size}")]
    IndexOutOfBounds {
        /// The op.
        op: &'static str,
        /// The offending index (`i64::MAX` stands for larger ones).
        index: i64,
        /// The axis indexed.
        axis: usize,
        /// The size of that axis.
        size: usize,
    },
    /// A rank the op does not accept.
    #[error("{op}: expected {expected}, got shape {shape}")]
    Rank {
        /// The op.
        op: &'static str,
        /// What the op accepts, e.g. "rank >= 2".
        expected: &'static str,
        /// The shape given.
        shape: Shape,
    },
    /// A shape whose element count or byte size overflows what one buffer
    /// can hold (`isize::MAX` bytes), so no tensor can have it.
    #[error(
        "{op}: shape {shape} is too large: its element count or byte size overflows (at most isize::MAX bytes)"
    )]
    ShapeOverflow {
        /// The op.
        op: &'static str,
        /// The requested shape.
        shape: Shape,
    },
    /// The allocator could not provide a buffer of `bytes` bytes.
    #[error("{op}: cannot allocate {bytes} bytes")]
    Alloc {
        /// The op.
        op: &'static str,
        /// The size of the buffer requested.
        bytes: usize,
    },
    /// Any other invalid argument; `msg` says which and why.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The op.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
}

impl Error {
    /// The name of the op that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::Broadcast { op, .. }
            | Error::ShapeMismatch { op, .. }
            | Error::DataLength { op, .. }
            | Error::Reshape { op, .. }
            | Error::InvalidAxis { op, .. }
            | Error::IndexOutOfBounds { op, .. }
            | Error::Rank { op, .. }
            | Error::ShapeOverflow { op, .. }
            | Error::Alloc { op, .. }
            | Error::InvalidArgument { op, .. } => op,
        }
    }
}

fn numel_text(shape: &Shape) -> String {
    match shape.checked_numel() {
        Some(n) => n.to_string(),
        None => "more than usize::MAX".into(),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
