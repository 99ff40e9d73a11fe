//! The error of layer, model, optimizer and loss operations.

use rime_tensor::PartialShape;

/// What went wrong. Variants name the layer (or optimizer, loss, file) and
/// the shapes involved; a call that returns an error changes nothing.
///
/// ```
/// use rime_layers::Error;
/// let e = Error::SetWeights { layer: "dense_1".into(), msg: "expected 2 arrays, got 1".into() };
/// assert_eq!(e.to_string(), "set_weights on layer `dense_1`: expected 2 arrays, got 1");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor op failed. (Boxed, like the tape's error, so that
    /// `Result<_, Error>` stays small.)
    #[error(transparent)]
    Tensor(Box<rime_tensor::Error>),
    /// A tape, variable or mask operation failed.
    #[error(transparent)]
    Tape(Box<rime_tape::Error>),
    /// `set_weights` got the wrong number of arrays or a wrong shape.
    #[error("set_weights on layer `{layer}`: {msg}")]
    SetWeights {
        /// The layer or model.
        layer: String,
        /// What did not fit.
        msg: String,
    },
    /// A layer cannot build for, or be called with, these inputs.
    #[error("layer `{layer}`: {msg} (input shapes {})", shapes_text(shapes))]
    Input {
        /// The layer.
        layer: String,
        /// Shapes of the inputs it was given (`None`: unknown dimension).
        shapes: Vec<PartialShape>,
        /// What it needs.
        msg: String,
    },
    /// A layer needs the size of an axis that is unknown (`None`) in the
    /// shapes it is built for: Dense's last axis, a convolution's
    /// channels. Declare the size (`Input::new([None, Some(16)])` instead of
    /// `[None, None]`) or build by calling the layer.
    #[error(
        "layer `{layer}` needs the size of axis {axis} {what}, unknown in input shapes {}",
        shapes_text(shapes)
    )]
    UnknownDimension {
        /// The layer.
        layer: String,
        /// The shapes it was built for.
        shapes: Vec<PartialShape>,
        /// The axis whose size is needed.
        axis: usize,
        /// What for (`"to size its kernel"`).
        what: String,
    },
    /// An id outside a table: an `Embedding` looked up with a negative id
    /// or one `>= input_dim`.
    ///
    /// ```
    /// use rime_layers::{Embedding, Error};
    /// use rime_tensor::Tensor;
    /// let emb = Embedding::<f32>::new(10, 2).named("words");
    /// let e = emb.lookup(&Tensor::vector(vec![3i64, 16_777_217])).unwrap_err();
    /// assert!(matches!(e, Error::IndexOutOfBounds { index: 16_777_217, bound: 10, .. }));
    /// assert_eq!(
    ///     e.to_string(),
    ///     "layer `words`: id 16777217 at flat position 1 is out of range 0..10 (ids of shape [2])"
    /// );
    /// ```
    #[error(
        "layer `{layer}`: id {index} at flat position {position} is out of range 0..{bound} (ids of shape {shape})"
    )]
    IndexOutOfBounds {
        /// The layer.
        layer: String,
        /// The id (exactly as given).
        index: i64,
        /// Its position in the ids, flattened.
        position: usize,
        /// The table size (`input_dim`).
        bound: usize,
        /// The ids' shape.
        shape: rime_tensor::Shape,
    },
    /// An invalid layer, optimizer, loss or model argument.
    #[error("{what}: {msg}")]
    InvalidArgument {
        /// Which layer, optimizer, loss or model (and argument).
        what: String,
        /// What was wrong.
        msg: String,
    },
    /// A functional model whose graph cannot be built as asked.
    #[error("model `{model}`: {msg}")]
    Graph {
        /// The model.
        model: String,
        /// What is wrong with the graph.
        msg: String,
    },
    /// A configuration that cannot be turned into a layer or model.
    #[error("config for `{class}`: {msg}")]
    Config {
        /// The class name.
        class: String,
        /// What is wrong.
        msg: String,
    },
    /// Reading or writing a weights file failed.
    #[error("weights file `{path}`: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        msg: String,
    },
    /// A dataset or data file that cannot be read or used as asked.
    #[error("{what}: {msg}")]
    Data {
        /// The dataset operation or file.
        what: String,
        /// What was wrong.
        msg: String,
    },
    /// A model or checkpoint file that is corrupt or does not fit.
    #[error("model file `{path}`: {msg}")]
    ModelFile {
        /// The file.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// Training across processes failed: another process failed, or the
    /// processes' models, optimizers or steps do not match.
    #[error("{what}: {msg}")]
    Distributed {
        /// The operation (`fit`, `broadcast_state`, the train step, ...).
        what: String,
        /// What went wrong, naming the processes involved.
        msg: String,
    },
    /// A model or checkpoint file written by another format version.
    #[error("model file `{path}`: format version {found}, this rime reads version {expected}")]
    FormatVersion {
        /// The file.
        path: String,
        /// The version in the file.
        found: String,
        /// The version this library reads.
        expected: u32,
    },
}

/// `[[2, 5], (None, 4)]`: a known shape as a tensor's (`[2, 5]`), one
/// with unknown dimensions as Keras writes it.
fn shapes_text(shapes: &[PartialShape]) -> String {
    let parts: Vec<String> = shapes
        .iter()
        .map(|s| match s.known() {
            Some(k) => k.to_string(),
            None => s.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

impl From<rime_tensor::Error> for Error {
    fn from(e: rime_tensor::Error) -> Self {
        Error::Tensor(Box::new(e))
    }
}

impl From<rime_tape::Error> for Error {
    fn from(e: rime_tape::Error) -> Self {
        Error::Tape(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
