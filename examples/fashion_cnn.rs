//! The Keras MNIST convnet trained on Fashion-MNIST (real data), then
//! fine-tuned with the first half of every convolution's filters frozen by
//! an element mask: the frozen numbers come out bit-identical.
//!
//! The data: Debian's `dataset-fashion-mnist` package installs the four IDX
//! files in `/usr/share/datasets/fashion-mnist` (`sudo apt-get install
//! dataset-fashion-mnist`); or set `FASHION_MNIST_DIR` to a directory
//! holding them (gzipped or not), e.g. downloaded from
//! <https://github.com/zalandoresearch/fashion-mnist>.
//!
//! ```sh
//! cargo run --release --example fashion_cnn            # 10 epochs, checks >= 90% test accuracy
//! cargo run --release --example fashion_cnn -- --quick # a subset, for CI
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use rime::prelude::*;

const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// One split: images `[n, 28, 28]` scaled to `[0, 1]`, and integer labels
/// `[n]` as the file holds them.
struct Split {
    images: Vec<f32>,
    labels: Tensor<i64>,
}

impl Split {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn truncate(&mut self, n: usize) -> rime::Result<()> {
        let n = n.min(self.len());
        self.labels = self.labels.narrow(0, 0, n)?;
        self.images.truncate(n * 784);
        Ok(())
    }

    /// The examples at `idx` as a `[b, 28, 28, 1]` batch and their labels.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor<f32>, Tensor<i64>), rime::tensor::Error> {
        let mut x = Vec::with_capacity(idx.len() * 784);
        for &i in idx {
            x.extend_from_slice(&self.images[i * 784..(i + 1) * 784]);
        }
        let labels = self.labels.index_select(0, idx)?;
        Ok((Tensor::from_vec(x, [idx.len(), 28, 28, 1])?, labels))
    }
}

/// How many predicted classes (the arg-max of `logits`) equal the labels.
fn hits(logits: &Tensor<f32>, labels: &Tensor<i64>) -> rime::Result<usize> {
    let pred = logits.argmax(-1, false)?;
    Ok(pred
        .as_slice()
        .iter()
        .zip(labels.as_slice())
        .filter(|(p, l)| p == l)
        .count())
}

/// Reads an IDX file (optionally gzipped) with rime's reader.
fn read_idx(path: &Path) -> Result<rime::layers::data::IdxArray, String> {
    rime::layers::data::read_idx(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

fn load_split(dir: &Path, prefix: &str) -> Result<Split, String> {
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"));
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"));
    let (Some(images), Some(labels)) = (images, labels) else {
        return Err(format!(
            "Fashion-MNIST files `{prefix}-images-idx3-ubyte[.gz]` and \
             `{prefix}-labels-idx1-ubyte[.gz]` not found in {}.\n\
             Install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; \
             they land in {DEBIAN_DIR}),\nor download the four files from \
             https://github.com/zalandoresearch/fashion-mnist (data/fashion) and set \
             FASHION_MNIST_DIR to their directory.",
            dir.display()
        ));
    };
    let (images, labels) = (read_idx(&images)?, read_idx(&labels)?);
    let (idims, ldims) = (&images.dims, &labels.dims);
    if idims.len() != 3 || idims[1..] != [28, 28] || *ldims != [idims[0]] {
        return Err(format!("unexpected shapes {idims:?} / {ldims:?}"));
    }
    // labels stay integers; the loss rejects any outside 0..10
    let labels = labels.to_int_tensor().map_err(|e| e.to_string())?;
    let rime::layers::data::IdxData::U8(bytes) = images.data else {
        return Err("the images are not unsigned bytes".into());
    };
    Ok(Split {
        images: bytes.iter().map(|&b| b as f32 / 255.0).collect(),
        labels,
    })
}

/// A small deterministic shuffle (xorshift), so the example needs no RNG crate.
fn shuffle(idx: &mut [usize], state: &mut u64) {
    for i in (1..idx.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        idx.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

fn accuracy(model: &dyn Layer<f32>, data: &Split) -> Result<f64, Box<dyn std::error::Error>> {
    let mut correct = 0;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(500) {
        let (x, labels) = data.batch(chunk)?;
        correct += hits(&model.call(&x, false)?, &labels)?;
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// One epoch of minibatch training; returns the mean loss and accuracy.
fn train_epoch(
    model: &dyn Layer<f32>,
    opt: &mut dyn Optimizer<f32>,
    data: &Split,
    batch: usize,
    seed: &mut u64,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut idx: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut idx, seed);
    let vars = model.trainable_weights();
    let (mut loss_sum, mut correct, mut seen) = (0.0, 0, 0);
    for chunk in idx.chunks(batch) {
        let (x, labels) = data.batch(chunk)?;
        let tape = GradientTape::new();
        let logits = model.call(&x, true)?;
        let loss = logits.sparse_softmax_cross_entropy(&labels)?.mean_all();
        let grads = tape.gradient(&loss, &vars)?;
        opt.apply_gradients(&grads, &vars)?;
        loss_sum += loss.to_scalar()? as f64 * chunk.len() as f64;
        correct += hits(&logits, &labels)?;
        seen += chunk.len();
    }
    Ok((loss_sum / seen as f64, correct as f64 / seen as f64))
}

fn bits(v: &Variable<f32>) -> Vec<u32> {
    v.to_vec().iter().map(|x| x.to_bits()).collect()
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    // measured (deterministic run, no dropout): test accuracy 85.5, 87.3,
    // 87.7, 88.8, 88.5, 89.5, 89.9, 90.0, 90.5, 90.6% after epochs 1-10;
    // dropout 0.3 was slower (88.75% after 4)
    let epochs = arg("--epochs").unwrap_or(if quick { 1 } else { 10 });
    // `--dropout` in percent (default none)
    let dropout = arg("--dropout").unwrap_or(0) as f64 / 100.0;
    let batch = arg("--batch").unwrap_or(64);
    let dir = std::env::var_os("FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_DIR));
    let (mut train, mut test) = match (load_split(&dir, "train"), load_split(&dir, "t10k")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if quick {
        train.truncate(3000)?;
        test.truncate(1000)?;
    }
    println!(
        "Fashion-MNIST from {}: {} training and {} test images ({})",
        dir.display(),
        train.len(),
        test.len(),
        CLASSES.join(", ")
    );

    rime::layers::initializers::set_global_seed(1);
    let conv1 = Arc::new(Conv2D::new(32, [3, 3]).activation(Activation::Relu));
    let conv2 = Arc::new(Conv2D::new(64, [3, 3]).activation(Activation::Relu));
    let model = Sequential::new()
        .add(conv1.clone())
        .add(MaxPooling2D::new(&[2, 2]))
        .add(conv2.clone())
        .add(MaxPooling2D::new(&[2, 2]))
        .add(Flatten::new())
        .add(Dropout::new(dropout))
        .add(Dense::new(10))
        .with_input_shape([28, 28, 1])?;
    println!("{}", rime::layers::models::summary(&model));

    let mut opt = Adam::new().learning_rate(1e-3);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut test_acc = 0.0;
    for epoch in 1..=epochs {
        let t = Instant::now();
        let (loss, acc) = train_epoch(&model, &mut opt, &train, batch, &mut seed)?;
        test_acc = accuracy(&model, &test)?;
        println!(
            "epoch {epoch}/{epochs}: loss {loss:.4}  train accuracy {:.2}%  test accuracy {:.2}%  ({:.1} s)",
            acc * 100.0,
            test_acc * 100.0,
            t.elapsed().as_secs_f64()
        );
    }

    // Fine-tune with the first half of each convolution's filters frozen:
    // a mask over the kernel's last axis (and the matching bias entries).
    let (k1, k2) = (
        conv1.kernel().unwrap().clone(),
        conv2.kernel().unwrap().clone(),
    );
    let (b1, b2) = (conv1.bias().unwrap().clone(), conv2.bias().unwrap().clone());
    for (k, b, filters) in [(&k1, &b1, 32), (&k2, &b2, 64)] {
        k.set_mask(Some(TrainableMask::axis_ranges(-1, filters / 2..filters)))?;
        b.set_mask(Some(TrainableMask::axis_ranges(0, filters / 2..filters)))?;
    }
    let frozen = |v: &Variable<f32>| -> Vec<u32> {
        let m = v.mask().expect("masked");
        bits(v)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !m.is_trainable(*i))
            .map(|(_, b)| b)
            .collect()
    };
    let before: Vec<Vec<u32>> = [&k1, &b1, &k2, &b2].map(frozen).to_vec();
    let whole_before: Vec<Vec<u32>> = [&k1, &k2].map(bits).to_vec();
    let mut opt = Adam::new().learning_rate(3e-4);
    let mut fine = Split {
        images: train.images.clone(),
        labels: train.labels.clone(),
    };
    fine.truncate(if quick { 1000 } else { 20000 })?;
    let t = Instant::now();
    let (loss, _) = train_epoch(&model, &mut opt, &fine, batch, &mut seed)?;
    let tuned_acc = accuracy(&model, &test)?;
    let after: Vec<Vec<u32>> = [&k1, &b1, &k2, &b2].map(frozen).to_vec();
    let whole_after: Vec<Vec<u32>> = [&k1, &k2].map(bits).to_vec();
    let identical = before == after;
    let moved = whole_before != whole_after;
    println!(
        "fine-tune ({} images, first half of the conv filters frozen): loss {loss:.4}  test accuracy {:.2}%  ({:.1} s)",
        fine.len(),
        tuned_acc * 100.0,
        t.elapsed().as_secs_f64()
    );
    println!(
        "frozen filters bit-identical: {identical} ({} numbers); trainable filters moved: {moved}",
        before.iter().map(Vec::len).sum::<usize>()
    );

    let target = if quick { 0.6 } else { 0.90 };
    if !identical || !moved || test_acc < target {
        eprintln!(
            "FAILED: test accuracy {:.2}% (needs {:.0}%), frozen identical {identical}, trainable moved {moved}",
            test_acc * 100.0,
            target * 100.0
        );
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ok: test accuracy {:.2}% >= {:.0}%",
        test_acc * 100.0,
        target * 100.0
    );
    Ok(ExitCode::SUCCESS)
}
