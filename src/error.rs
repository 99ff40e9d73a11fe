//! One error type for code that uses several rime crates.

/// Any error of rime's crates, so that one function returning
/// [`rime::Result`](Result) can `?` tensor ops, tape calls, layers,
/// optimizers and file I/O alike. Each crate's error converts into it
/// (`From`), and nested errors are flattened: a tensor error is
/// [`Error::Tensor`] whether it came from an op, from the tape or from a
/// layer. The message is the inner error's, unchanged. (The inner errors
/// are boxed so that `rime::Result<T>` stays small.)
///
/// ```
/// use rime::prelude::*;
///
/// fn step(w: &Variable<f32>, x: &Tensor<f32>) -> rime::Result<f32> {
///     let tape = GradientTape::new();
///     let loss = x.matmul(&w.value())?.square().mean_all(); // rime_tensor::Error
///     let grad = tape.gradient_of(&loss, w)?; // rime_tape::Error
///     Sgd::new().learning_rate(0.1).apply_gradients(&[Some(grad)], &[w.clone()])?; // rime_layers::Error
///     Ok(loss.to_scalar()?)
/// }
/// let w = Variable::new("w", Tensor::from_vec(vec![1.0f32, -1.0], [2, 1])?);
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2])?;
/// assert_eq!(step(&w, &x)?, 1.0);
///
/// // a shape error names the op and the shapes, whichever crate raised it
/// let err = step(&w, &Tensor::from_vec(vec![1.0f32; 3], [1, 3])?).unwrap_err();
/// assert!(matches!(err, rime::Error::Tensor(_)));
/// assert!(err.to_string().contains("matmul"), "{err}");
/// # Ok::<(), rime::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor op failed (from rime-tensor, directly or through the tape
    /// or a layer).
    #[error(transparent)]
    Tensor(Box<rime_tensor::Error>),
    /// A tape, variable or mask operation failed.
    #[error(transparent)]
    Tape(Box<rime_tape::Error>),
    /// A layer, model, optimizer, loss or weights file operation failed.
    #[error(transparent)]
    Layers(Box<rime_layers::Error>),
    /// [`gradcheck`](rime_tape::gradcheck) found a mismatch or could not
    /// evaluate the function.
    #[error(transparent)]
    Gradcheck(Box<rime_tape::GradcheckError>),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with [`Error`] (`rime::Result<T>`).
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rime_tensor::Error> for Error {
    fn from(e: rime_tensor::Error) -> Self {
        Error::Tensor(Box::new(e))
    }
}

impl From<rime_tape::Error> for Error {
    fn from(e: rime_tape::Error) -> Self {
        match e {
            rime_tape::Error::Tensor(e) => Error::Tensor(Box::new(e)),
            e => Error::Tape(Box::new(e)),
        }
    }
}

impl From<rime_layers::Error> for Error {
    fn from(e: rime_layers::Error) -> Self {
        match e {
            rime_layers::Error::Tensor(e) => Error::Tensor(e),
            rime_layers::Error::Tape(e) => Error::from(*e),
            e => Error::Layers(Box::new(e)),
        }
    }
}

impl From<rime_tape::GradcheckError> for Error {
    fn from(e: rime_tape::GradcheckError) -> Self {
        Error::Gradcheck(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rime_tensor::Tensor;

    fn shape_error() -> rime_tensor::Error {
        Tensor::<f32>::vector(vec![1.0, 2.0])
            .add(&Tensor::vector(vec![1.0, 2.0, 3.0]))
            .unwrap_err()
    }

    #[test]
    fn nested_tensor_errors_flatten_and_keep_their_message() {
        let inner = shape_error();
        let message = inner.to_string();
        let via_tape = Error::from(rime_tape::Error::from(inner.clone()));
        let via_layers = Error::from(rime_layers::Error::from(inner.clone()));
        let via_layers_tape = Error::from(rime_layers::Error::from(rime_tape::Error::from(
            inner.clone(),
        )));
        for e in [via_tape, via_layers, via_layers_tape] {
            match &e {
                Error::Tensor(t) => assert_eq!(**t, inner),
                other => panic!("not flattened: {other:?}"),
            }
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn layer_errors_stay_layer_errors() {
        assert!(
            std::mem::size_of::<Error>() <= 16,
            "rime::Result stays small"
        );
        let e = rime_layers::Error::SetWeights {
            layer: "dense".into(),
            msg: "expected 2 arrays, got 1".into(),
        };
        let text = e.to_string();
        let converted = Error::from(e);
        match &converted {
            Error::Layers(e) => assert!(matches!(**e, rime_layers::Error::SetWeights { .. })),
            other => panic!("{other:?}"),
        }
        assert_eq!(converted.to_string(), text);
    }
}
