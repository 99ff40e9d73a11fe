//! The error of tape, variable and mask operations.

use rime_tensor::Shape;

/// What went wrong. Each variant names the call and the shapes involved; a
/// call that returns an error leaves the tape and its variables as they were.
///
/// ```
/// use rime_tape::{Error, GradientTape, Variable};
/// use rime_tensor::Tensor;
/// let v = Variable::new("w", Tensor::<f32>::zeros([2]).unwrap());
/// let err = v.assign(&Tensor::zeros([3]).unwrap()).unwrap_err();
/// assert!(matches!(err, Error::AssignShape { .. }));
/// assert_eq!(err.to_string(), "assign to variable `w`: value of shape [3] does not fit shape [2]");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor op failed (see the wrapped error).
    #[error(transparent)]
    Tensor(#[from] rime_tensor::Error),
    /// `gradient` (or `jacobian`) was called a second time on a
    /// non-persistent tape.
    #[error(
        "{call}: this non-persistent GradientTape was already used for a gradient; \
         create it with GradientTape::persistent() to compute several"
    )]
    TapeExhausted {
        /// The call.
        call: &'static str,
    },
    /// The target was not computed on this tape from anything it watches.
    #[error(
        "{call}: target {index} (shape {shape}) was not recorded on this tape: it is not computed \
         from any watched tensor or variable while the tape was recording"
    )]
    TargetNotRecorded {
        /// The call.
        call: &'static str,
        /// Position of the target in the call's list.
        index: usize,
        /// The target's shape.
        shape: Shape,
    },
    /// An `output_gradients` entry whose shape differs from its target's.
    #[error("{call}: output gradient {index} has shape {given}, its target has shape {target}")]
    OutputGradientShape {
        /// The call.
        call: &'static str,
        /// Position of the target.
        index: usize,
        /// The target's shape.
        target: Shape,
        /// The seed's shape.
        given: Shape,
    },
    /// A value assigned to a variable whose shape differs from the variable's.
    #[error("assign to variable `{variable}`: value of shape {got} does not fit shape {expected}")]
    AssignShape {
        /// The variable's name.
        variable: String,
        /// The variable's shape.
        expected: Shape,
        /// The value's shape.
        got: Shape,
    },
    /// A variable written (assigned or updated) from inside its own
    /// [`Variable::update`](crate::Variable::update) closure, on the thread
    /// running it. (Reads there see the value from before the update.)
    #[error("{call} on variable `{variable}` inside its own update closure")]
    ReentrantUpdate {
        /// The variable's name.
        variable: String,
        /// The write attempted (`assign`, `update`, ...).
        call: &'static str,
    },
    /// A mask that does not fit the variable or tensor it is applied to.
    #[error("trainable mask for `{target}` (shape {shape}): {msg}")]
    Mask {
        /// The variable's name, or what the mask was resolved for.
        target: String,
        /// The shape it was resolved against.
        shape: Shape,
        /// What did not fit.
        msg: String,
    },
    /// Any other invalid argument to a tape call.
    #[error("{call}: {msg}")]
    InvalidArgument {
        /// The call.
        call: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// [`gradient_of`](crate::GradientTape::gradient_of) was asked for the
    /// gradient with respect to a source the target does not depend on.
    #[error(
        "{call}: the target does not depend on the source of shape {shape} (it was not \
         used, or only through stop_gradient or untracked values); ask for \
         UnconnectedGradients::Zero to get zeros instead"
    )]
    Unconnected {
        /// The call.
        call: &'static str,
        /// The source's shape.
        shape: Shape,
    },
    /// A user-supplied gradient function (custom gradient) returned
    /// something that does not fit its inputs.
    #[error("custom gradient `{name}`: {msg}")]
    CustomGradient {
        /// The custom op's name.
        name: String,
        /// What did not fit.
        msg: String,
    },
}

/// `Result` with [`Error`].
///
/// ```
/// fn double(v: &rime_tape::Variable<f32>) -> rime_tape::Result<()> {
///     v.assign(&v.value_untracked().mul_scalar(2.0))
/// }
/// let v = rime_tape::Variable::new("v", rime_tensor::Tensor::<f32>::ones([2])?);
/// double(&v)?;
/// assert_eq!(v.to_vec(), vec![2.0, 2.0]);
/// # Ok::<(), rime_tape::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
