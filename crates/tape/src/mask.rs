//! [`TrainableMask`]: which elements of one variable may train.
//!
//! A mask is described first ([`TrainableMask`]: rows, columns, ranges on
//! an axis, an element list, a 0/1 tensor, a predicate, and their union,
//! intersection and complement) and resolved against the variable's shape
//! when it is set ([`ResolvedMask`]). The resolved form is what the rest of
//! the library reads:
//!
//! - `gradient` writes exact zeros at frozen elements;
//! - optimizers update only the trainable [`runs`](ResolvedMask::runs)
//!   (maximal stretches of consecutive trainable elements in row-major
//!   order), so frozen weights and all optimizer state for them stay
//!   bit-for-bit unchanged;
//! - for a 2-D variable whose trainable part is a set of whole rows or whole
//!   columns ([`MaskStructure`]), the matmul gradient rule computes only
//!   that block of the weight gradient.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use rime_tensor::{Element, Shape, Tensor};

use crate::{Error, Result};

type Predicate = Arc<dyn Fn(&[usize]) -> bool + Send + Sync>;

#[derive(Clone)]
enum Spec {
    All,
    AxisRanges {
        axis: isize,
        ranges: Vec<Range<usize>>,
    },
    Elements(Vec<Vec<usize>>),
    Bits {
        shape: Shape,
        bits: Arc<[bool]>,
    },
    Predicate(Predicate),
    Union(Box<Spec>, Box<Spec>),
    Intersection(Box<Spec>, Box<Spec>),
    Complement(Box<Spec>),
}

/// A description of the trainable elements of one variable, resolved
/// against the variable's shape when set with
/// [`Variable::set_mask`](crate::Variable::set_mask).
///
/// ```
/// use rime_tape::TrainableMask;
/// use rime_tensor::Shape;
/// // a 6×4 kernel whose first two rows (W1) are frozen
/// let mask = TrainableMask::rows(0..2).complement();
/// let r = mask.resolve("kernel", &Shape::from([6, 4]))?;
/// assert_eq!(r.trainable_count(), 16);
/// assert_eq!(r.runs(), &[8..24]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone)]
pub struct TrainableMask(Spec);

impl fmt::Debug for TrainableMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn rec(s: &Spec, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match s {
                Spec::All => f.write_str("all"),
                Spec::AxisRanges { axis, ranges } => write!(f, "axis {axis} in {ranges:?}"),
                Spec::Elements(e) => write!(f, "{} elements", e.len()),
                Spec::Bits { shape, .. } => write!(f, "bits of shape {shape}"),
                Spec::Predicate(_) => f.write_str("predicate"),
                Spec::Union(a, b) => {
                    f.write_str("(")?;
                    rec(a, f)?;
                    f.write_str(" | ")?;
                    rec(b, f)?;
                    f.write_str(")")
                }
                Spec::Intersection(a, b) => {
                    f.write_str("(")?;
                    rec(a, f)?;
                    f.write_str(" & ")?;
                    rec(b, f)?;
                    f.write_str(")")
                }
                Spec::Complement(a) => {
                    f.write_str("!")?;
                    rec(a, f)
                }
            }
        }
        f.write_str("TrainableMask(")?;
        rec(&self.0, f)?;
        f.write_str(")")
    }
}

/// One index range or several: what [`TrainableMask::rows`] and its
/// siblings take, so both `rows(0..2)` and `rows([0..2, 5..6])` read
/// naturally.
///
/// ```
/// use rime_tape::IndexRanges;
/// assert_eq!((0..2).into_ranges(), vec![0..2]);
/// assert_eq!([0..2, 5..6].into_ranges(), vec![0..2, 5..6]);
/// assert_eq!(vec![1..3].into_ranges(), vec![1..3]);
/// ```
pub trait IndexRanges {
    /// The ranges, in the order given.
    fn into_ranges(self) -> Vec<Range<usize>>;
}

impl IndexRanges for Range<usize> {
    fn into_ranges(self) -> Vec<Range<usize>> {
        vec![self]
    }
}

impl<const N: usize> IndexRanges for [Range<usize>; N] {
    fn into_ranges(self) -> Vec<Range<usize>> {
        self.into()
    }
}

impl IndexRanges for Vec<Range<usize>> {
    fn into_ranges(self) -> Vec<Range<usize>> {
        self
    }
}

impl IndexRanges for &[Range<usize>] {
    fn into_ranges(self) -> Vec<Range<usize>> {
        self.to_vec()
    }
}

impl TrainableMask {
    /// Every element trainable.
    ///
    /// ```
    /// use rime_tape::{MaskStructure, TrainableMask};
    /// let r = TrainableMask::all().resolve("w", &[2, 3].into())?;
    /// assert_eq!((r.trainable_count(), r.structure()), (6, &MaskStructure::All));
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn all() -> Self {
        TrainableMask(Spec::All)
    }

    /// No element trainable (the variable is frozen, element by element).
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::none().resolve("w", &[2, 3].into())?;
    /// assert_eq!(r.trainable_count(), 0);
    /// assert_eq!(r.frozen_runs(), &[0..6]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn none() -> Self {
        TrainableMask(Spec::Complement(Box::new(Spec::All)))
    }

    /// Rows (axis 0) in any of `ranges` are trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::rows(1..2).resolve("w", &[3, 2].into())?;
    /// assert_eq!(r.runs(), &[2..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn rows(ranges: impl IndexRanges) -> Self {
        Self::axis_ranges(0, ranges)
    }

    /// Columns (the last axis) in any of `ranges` are trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::cols(0..1).resolve("w", &[2, 3].into())?;
    /// assert_eq!(r.runs(), &[0..1, 3..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn cols(ranges: impl IndexRanges) -> Self {
        Self::axis_ranges(-1, ranges)
    }

    /// Elements whose index on `axis` (negative counts from the end) lies in
    /// any of `ranges` are trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// // a [2, 3, 2] kernel whose middle entry on axis 1 trains
    /// let r = TrainableMask::axis_ranges(1, 1..2).resolve("k", &[2, 3, 2].into())?;
    /// assert_eq!(r.runs(), &[2..4, 8..10]);
    /// assert!(TrainableMask::axis_ranges(3, 0..1).resolve("k", &[2, 3, 2].into()).is_err());
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn axis_ranges(axis: isize, ranges: impl IndexRanges) -> Self {
        TrainableMask(Spec::AxisRanges {
            axis,
            ranges: ranges.into_ranges(),
        })
    }

    /// Freezes the rows in `ranges`, everything else trainable (the "W1"
    /// block of a kernel): shorthand for `rows(ranges).complement()`.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::freeze_rows(0..1).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.runs(), &[2..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn freeze_rows(ranges: impl IndexRanges) -> Self {
        Self::rows(ranges).complement()
    }

    /// Freezes the columns in `ranges`, everything else trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::freeze_cols(0..1).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.runs(), &[1..2, 3..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn freeze_cols(ranges: impl IndexRanges) -> Self {
        Self::cols(ranges).complement()
    }

    /// The listed multi-indices are trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::elements([vec![0, 1], vec![1, 0]]).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.runs(), &[1..3]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn elements(indices: impl IntoIterator<Item = Vec<usize>>) -> Self {
        TrainableMask(Spec::Elements(indices.into_iter().collect()))
    }

    /// One flag per element, row-major, for a tensor of `shape`. A shape
    /// that differs from the variable's, or a number of flags that differs
    /// from the shape's element count, is an error when the mask is
    /// resolved.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let m = TrainableMask::from_bools([2, 2], vec![true, false, false, true]);
    /// assert_eq!(m.resolve("w", &[2, 2].into())?.runs(), &[0..1, 3..4]);
    /// assert!(TrainableMask::from_bools([2, 2], vec![true; 3]).resolve("w", &[2, 2].into()).is_err());
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn from_bools(shape: impl Into<Shape>, bits: Vec<bool>) -> Self {
        TrainableMask(Spec::Bits {
            shape: shape.into(),
            bits: bits.into(),
        })
    }

    /// From a 0/1 tensor (1 = trainable). Any other value is an error.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// use rime_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2])?;
    /// let r = TrainableMask::from_tensor(&t)?.resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.runs(), &[0..1, 3..4]);
    /// assert!(TrainableMask::from_tensor(&Tensor::vector(vec![0.5f32])).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_tensor<T: Element>(t: &Tensor<T>) -> Result<Self> {
        let mut bits = Vec::with_capacity(t.len());
        for (i, &v) in t.as_slice().iter().enumerate() {
            if v == T::one() {
                bits.push(true);
            } else if v == T::zero() {
                bits.push(false);
            } else {
                return Err(Error::InvalidArgument {
                    call: "TrainableMask::from_tensor",
                    msg: format!("element {i} is {v}; a mask tensor holds only 0 and 1"),
                });
            }
        }
        Ok(Self::from_bools(t.shape().clone(), bits))
    }

    /// Elements whose multi-index satisfies `f` are trainable.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// // the upper triangle of a square matrix
    /// let r = TrainableMask::predicate(|ix| ix[1] >= ix[0]).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.runs(), &[0..2, 3..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn predicate(f: impl Fn(&[usize]) -> bool + Send + Sync + 'static) -> Self {
        TrainableMask(Spec::Predicate(Arc::new(f)))
    }

    /// Trainable where either mask is.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let m = TrainableMask::rows(0..1).union(TrainableMask::cols(2..3));
    /// assert_eq!(m.resolve("w", &[2, 3].into())?.runs(), &[0..3, 5..6]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn union(self, other: TrainableMask) -> Self {
        TrainableMask(Spec::Union(Box::new(self.0), Box::new(other.0)))
    }

    /// Trainable where both masks are.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let m = TrainableMask::rows(0..2).intersection(TrainableMask::cols(1..2));
    /// assert_eq!(m.resolve("w", &[3, 3].into())?.runs(), &[1..2, 4..5]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn intersection(self, other: TrainableMask) -> Self {
        TrainableMask(Spec::Intersection(Box::new(self.0), Box::new(other.0)))
    }

    /// Trainable where this mask is not.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let m = TrainableMask::elements([vec![1]]).complement();
    /// assert_eq!(m.resolve("v", &[3].into())?.runs(), &[0..1, 2..3]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn complement(self) -> Self {
        TrainableMask(Spec::Complement(Box::new(self.0)))
    }

    /// Resolves the mask against a shape; `target` names the variable in
    /// errors (ranges or indices out of bounds, a 0/1 tensor of another
    /// shape). [`Variable::set_mask`](crate::Variable::set_mask) does this
    /// with the variable's name and shape.
    ///
    /// ```
    /// use rime_tape::{Error, TrainableMask};
    /// let m = TrainableMask::rows(0..2);
    /// assert_eq!(m.resolve("kernel", &[3, 2].into())?.trainable_count(), 4);
    /// let e = m.resolve("kernel", &[1, 2].into()).unwrap_err();
    /// assert!(matches!(e, Error::Mask { ref target, .. } if target == "kernel"));
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn resolve(&self, target: &str, shape: &Shape) -> Result<ResolvedMask> {
        let err = |msg: String| Error::Mask {
            target: target.to_string(),
            shape: shape.clone(),
            msg,
        };
        // the shape may come from anywhere: size the flags with checked
        // arithmetic and a fallible reservation before building them
        let n = shape
            .checked_len::<bool>("TrainableMask")
            .map_err(|e| err(e.to_string()))?;
        Vec::<bool>::new()
            .try_reserve_exact(n)
            .map_err(|_| err(format!("cannot allocate {n} flags")))?;
        let bits = eval(&self.0, shape, &err)?;
        Ok(ResolvedMask::from_bits(shape.clone(), bits))
    }
}

fn eval(spec: &Spec, shape: &Shape, err: &dyn Fn(String) -> Error) -> Result<Vec<bool>> {
    let n = shape.numel();
    Ok(match spec {
        Spec::All => vec![true; n],
        Spec::AxisRanges { axis, ranges } => {
            let a = shape.axis("TrainableMask", *axis).map_err(|_| {
                err(format!(
                    "axis {axis} is out of range for rank {}",
                    shape.rank()
                ))
            })?;
            let d = shape[a];
            let mut on_axis = vec![false; d];
            for r in ranges {
                if r.start > r.end || r.end > d {
                    return Err(err(format!(
                        "range {r:?} is out of bounds for axis {a} of size {d}"
                    )));
                }
                on_axis[r.clone()].iter_mut().for_each(|b| *b = true);
            }
            let inner: usize = shape[a + 1..].iter().product();
            (0..n).map(|i| on_axis[(i / inner) % d]).collect()
        }
        Spec::Elements(list) => {
            let strides = shape.strides();
            let mut bits = vec![false; n];
            for ix in list {
                if ix.len() != shape.rank() || ix.iter().zip(shape.iter()).any(|(&i, &d)| i >= d) {
                    return Err(err(format!("element index {ix:?} is out of bounds")));
                }
                bits[ix.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()] = true;
            }
            bits
        }
        Spec::Bits { shape: s, bits } => {
            if s != shape {
                return Err(err(format!("a mask of shape {s} does not fit")));
            }
            if bits.len() != n {
                return Err(err(format!(
                    "{} flags given for a mask of shape {s} ({n} elements)",
                    bits.len()
                )));
            }
            bits.to_vec()
        }
        Spec::Predicate(f) => {
            let mut ix = vec![0usize; shape.rank()];
            let mut bits = Vec::with_capacity(n);
            for _ in 0..n {
                bits.push(f(&ix));
                for j in (0..ix.len()).rev() {
                    ix[j] += 1;
                    if ix[j] < shape[j] {
                        break;
                    }
                    ix[j] = 0;
                }
            }
            bits
        }
        Spec::Union(a, b) => {
            let (a, b) = (eval(a, shape, err)?, eval(b, shape, err)?);
            a.iter().zip(&b).map(|(x, y)| *x || *y).collect()
        }
        Spec::Intersection(a, b) => {
            let (a, b) = (eval(a, shape, err)?, eval(b, shape, err)?);
            a.iter().zip(&b).map(|(x, y)| *x && *y).collect()
        }
        Spec::Complement(a) => eval(a, shape, err)?.into_iter().map(|b| !b).collect(),
    })
}

/// The shape of the trainable part of a 2-D mask, which the matmul gradient
/// rule uses to compute only that block of a weight gradient.
///
/// ```
/// use rime_tape::{MaskStructure, TrainableMask};
/// let s = |m: TrainableMask| m.resolve("w", &[4, 4].into()).unwrap().structure().clone();
/// assert_eq!(s(TrainableMask::rows(2..4)), MaskStructure::Rows(vec![2..4]));
/// assert_eq!(s(TrainableMask::cols(0..1)), MaskStructure::Cols(vec![0..1]));
/// assert_eq!(s(TrainableMask::elements([vec![0, 0]])), MaskStructure::Irregular);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MaskStructure {
    /// Every element trainable.
    All,
    /// No element trainable.
    Nothing,
    /// Whole rows (axis 0) of a 2-D tensor.
    Rows(Vec<Range<usize>>),
    /// Whole columns (axis 1) of a 2-D tensor.
    Cols(Vec<Range<usize>>),
    /// Anything else.
    Irregular,
}

/// A mask resolved against a shape: what gradients and optimizers read.
/// An optimizer updates exactly the elements in [`runs`](Self::runs) and
/// leaves everything about the others alone.
///
/// ```
/// use rime_tape::TrainableMask;
/// let r = TrainableMask::freeze_rows(0..1).resolve("w", &[3, 2].into())?;
/// let mut w = vec![1.0f32; 6];
/// let grad = vec![0.5f32; 6];
/// for run in r.runs() {
///     for i in run.clone() {
///         w[i] -= grad[i]; // an SGD step on trainable elements only
///     }
/// }
/// assert_eq!(w, vec![1.0, 1.0, 0.5, 0.5, 0.5, 0.5]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedMask {
    shape: Shape,
    bits: Arc<[bool]>,
    runs: Vec<Range<usize>>,
    frozen_runs: Vec<Range<usize>>,
    structure: MaskStructure,
}

fn runs_of(bits: &[bool], want: bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in bits.iter().enumerate() {
        match (b == want, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..bits.len());
    }
    out
}

impl ResolvedMask {
    fn from_bits(shape: Shape, bits: Vec<bool>) -> Self {
        let runs = runs_of(&bits, true);
        let frozen_runs = runs_of(&bits, false);
        let structure = if frozen_runs.is_empty() {
            MaskStructure::All
        } else if runs.is_empty() {
            MaskStructure::Nothing
        } else if shape.rank() == 2 {
            let (r, c) = (shape[0], shape[1]);
            let row = |i: usize| &bits[i * c..(i + 1) * c];
            if (0..r).all(|i| row(i).iter().all(|&b| b == row(i)[0])) {
                let per_row: Vec<bool> = (0..r).map(|i| row(i)[0]).collect();
                MaskStructure::Rows(runs_of(&per_row, true))
            } else if (1..r).all(|i| row(i) == row(0)) {
                MaskStructure::Cols(runs_of(row(0), true))
            } else {
                MaskStructure::Irregular
            }
        } else {
            MaskStructure::Irregular
        };
        ResolvedMask {
            shape,
            bits: bits.into(),
            runs,
            frozen_runs,
            structure,
        }
    }

    /// The shape it was resolved against.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::all().resolve("w", &[2, 5].into())?;
    /// assert_eq!(r.shape(), &[2, 5]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// One flag per element, row-major (true = trainable).
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::cols(1..2).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.bits(), &[false, true, false, true]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn bits(&self) -> &[bool] {
        &self.bits
    }

    /// Maximal runs of consecutive trainable elements (flat row-major
    /// indices), in order. An optimizer updates exactly these.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::rows([0..1, 2..3]).resolve("w", &[3, 2].into())?;
    /// assert_eq!(r.runs(), &[0..2, 4..6]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn runs(&self) -> &[Range<usize>] {
        &self.runs
    }

    /// Maximal runs of frozen elements, in order.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::rows([0..1, 2..3]).resolve("w", &[3, 2].into())?;
    /// assert_eq!(r.frozen_runs(), &[2..4]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn frozen_runs(&self) -> &[Range<usize>] {
        &self.frozen_runs
    }

    /// Number of trainable elements.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::cols(0..1).resolve("w", &[4, 4].into())?;
    /// assert_eq!(r.trainable_count(), 4);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn trainable_count(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    /// Whether the element at flat index `i` may train (`false` past the
    /// end).
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::rows(1..2).resolve("w", &[2, 2].into())?;
    /// assert!(!r.is_trainable(1) && r.is_trainable(2));
    /// assert!(!r.is_trainable(4));
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn is_trainable(&self, i: usize) -> bool {
        self.bits.get(i).copied().unwrap_or(false)
    }

    /// Row or column structure, if any (see [`MaskStructure`]).
    ///
    /// ```
    /// use rime_tape::{MaskStructure, TrainableMask};
    /// let r = TrainableMask::freeze_rows(0..2).resolve("w", &[5, 3].into())?;
    /// assert_eq!(r.structure(), &MaskStructure::Rows(vec![2..5]));
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn structure(&self) -> &MaskStructure {
        &self.structure
    }

    /// The mask as a 0/1 tensor.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::rows(1..2).resolve("w", &[2, 2].into())?;
    /// assert_eq!(r.to_tensor::<f32>().to_vec(), vec![0.0, 0.0, 1.0, 1.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn to_tensor<T: Element>(&self) -> Tensor<T> {
        let v = self
            .bits
            .iter()
            .map(|&b| if b { T::one() } else { T::zero() })
            .collect();
        Tensor::from_vec(v, self.shape.clone()).expect("a mask's bits match its shape")
    }

    /// Sets frozen elements of `values` (row-major, of this mask's shape)
    /// to zero; a longer or shorter slice is zeroed where the indices
    /// exist.
    ///
    /// ```
    /// use rime_tape::TrainableMask;
    /// let r = TrainableMask::cols(1..2).resolve("w", &[2, 2].into())?;
    /// let mut g = vec![1.0f32, 2.0, 3.0, 4.0];
    /// r.zero_frozen(&mut g);
    /// assert_eq!(g, vec![0.0, 2.0, 0.0, 4.0]);
    /// # Ok::<(), rime_tape::Error>(())
    /// ```
    pub fn zero_frozen<T: Element>(&self, values: &mut [T]) {
        let n = values.len();
        if self.frozen_runs.len() > 64 && self.frozen_runs.len() * 8 > n {
            // many short runs (an irregular mask): one pass over the flags
            for (v, &b) in values.iter_mut().zip(self.bits.iter()) {
                if !b {
                    *v = T::zero();
                }
            }
            return;
        }
        for r in &self.frozen_runs {
            let end = r.end.min(n);
            if r.start < end {
                values[r.start..end].fill(T::zero());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_detection() {
        let s = Shape::from([4, 3]);
        let r = |m: TrainableMask| m.resolve("w", &s).unwrap().structure().clone();
        assert_eq!(r(TrainableMask::all()), MaskStructure::All);
        assert_eq!(r(TrainableMask::none()), MaskStructure::Nothing);
        assert_eq!(
            r(TrainableMask::rows([1..2, 3..4])),
            MaskStructure::Rows(vec![1..2, 3..4])
        );
        assert_eq!(
            r(TrainableMask::freeze_cols(1..2)),
            MaskStructure::Cols(vec![0..1, 2..3])
        );
        assert_eq!(
            r(TrainableMask::elements([vec![0, 0]])),
            MaskStructure::Irregular
        );
        // combinations still detect rows
        let m = TrainableMask::rows(0..2).union(TrainableMask::rows(3..4));
        assert_eq!(r(m), MaskStructure::Rows(vec![0..2, 3..4]));
    }

    #[test]
    fn set_algebra() {
        let s = Shape::from([6]);
        let a = TrainableMask::rows(0..3);
        let b = TrainableMask::rows(2..5);
        let bits = |m: TrainableMask| m.resolve("v", &s).unwrap().bits().to_vec();
        assert_eq!(
            bits(a.clone().union(b.clone())),
            vec![true, true, true, true, true, false]
        );
        assert_eq!(
            bits(a.clone().intersection(b.clone())),
            vec![false, false, true, false, false, false]
        );
        assert_eq!(
            bits(a.complement()),
            vec![false, false, false, true, true, true]
        );
    }

    #[test]
    fn bad_masks_are_typed_errors() {
        let s = Shape::from([2, 3]);
        let bad = [
            TrainableMask::rows(0..3),
            TrainableMask::axis_ranges(2, 0..1),
            TrainableMask::elements([vec![2, 0]]),
            TrainableMask::elements([vec![0]]),
            TrainableMask::from_bools([3, 2], vec![true; 6]),
        ];
        for m in bad {
            let e = m.resolve("kernel", &s).unwrap_err();
            assert!(
                matches!(&e, Error::Mask { target, .. } if target == "kernel"),
                "{e}"
            );
        }
    }

    #[test]
    fn zero_frozen_clears_only_frozen() {
        let r = TrainableMask::cols(1..2)
            .resolve("w", &[2, 2].into())
            .unwrap();
        let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
        r.zero_frozen(&mut v);
        assert_eq!(v, vec![0.0, 2.0, 0.0, 4.0]);
        assert_eq!(r.to_tensor::<f64>().to_vec(), vec![0.0, 1.0, 0.0, 1.0]);
    }
}
