//! Losses and metrics: values worked out by hand from Keras 3's formulas,
//! gradients against central differences, shape handling and bad input.
//! Values computed by Keras itself are checked in the facade's parity tests.

use rime_layers::losses::{
    BinaryCrossentropy, CategoricalCrossentropy, Huber, Loss, MeanAbsoluteError, MeanSquaredError,
    Reduction, SparseCategoricalCrossentropy,
};
use rime_layers::metrics::{
    Accuracy, BinaryAccuracy, CategoricalAccuracy, Mean, Metric, SparseCategoricalAccuracy,
    UpdateState,
};
use rime_tape::{GradcheckOptions, gradcheck};
use rime_tensor::Tensor;

fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-12 * b.abs().max(1.0),
        "{what}: {a} vs {b}"
    );
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn regression_losses_by_hand() {
    let y = t(&[0.0, 1.0, 2.0, -1.0], &[2, 2]);
    let p = t(&[0.5, 1.0, 0.0, 2.0], &[2, 2]);
    // per sample: mse [(0.25 + 0) / 2, (4 + 9) / 2]
    close(
        MeanSquaredError::new()
            .call(&y, &p)
            .unwrap()
            .to_scalar()
            .unwrap(),
        (0.125 + 6.5) / 2.0,
        "mse",
    );
    let sum = MeanSquaredError::new()
        .with_reduction(Reduction::Sum)
        .call(&y, &p)
        .unwrap();
    close(sum.to_scalar().unwrap(), 6.625, "mse sum");
    close(
        MeanAbsoluteError::new()
            .call(&y, &p)
            .unwrap()
            .to_scalar()
            .unwrap(),
        (0.25 + 2.5) / 2.0,
        "mae",
    );
    // huber δ=1: e = [0.5, 0, -2, 3] -> [0.125, 0, 1.5, 2.5]
    close(
        Huber::new().call(&y, &p).unwrap().to_scalar().unwrap(),
        (0.0625 + 2.0) / 2.0,
        "huber",
    );
    // δ=2.5: [0.125, 0, 2, 3·2.5 − 3.125]
    let h = Huber::new()
        .with_delta(2.5)
        .with_reduction(Reduction::None)
        .call(&y, &p)
        .unwrap();
    close(h.to_vec()[1], (2.0 + 4.375) / 2.0, "huber delta");
}

#[test]
fn cross_entropies_by_hand() {
    let z = t(&[1.0, 0.0, 0.0, 1.0], &[2, 2]);
    let x = t(&[2.0, -1.0, 0.5, 30.0], &[2, 2]);
    // from logits: mean over the last axis of softplus(x) - x z
    let want: f64 = [(2.0, 1.0), (-1.0, 0.0), (0.5, 0.0), (30.0, 1.0)]
        .iter()
        .map(|&(x, z): &(f64, f64)| (1.0 + x.exp()).ln() - x * z)
        .sum::<f64>()
        / 4.0;
    let bce = BinaryCrossentropy::new()
        .with_from_logits(true)
        .call(&z, &x)
        .unwrap();
    close(bce.to_scalar().unwrap(), want, "bce logits");
    // from probabilities: the same numbers through a sigmoid (clipped at 1 - 1e-7)
    let probs = t(
        &x.to_vec().iter().map(|&v| sigmoid(v)).collect::<Vec<_>>(),
        &[2, 2],
    );
    let bce_p = BinaryCrossentropy::new()
        .call(&z, &probs)
        .unwrap()
        .to_scalar()
        .unwrap();
    let clipped: f64 = [(2.0, 1.0), (-1.0, 0.0), (0.5, 0.0), (30.0, 1.0)]
        .iter()
        .map(|&(x, z): &(f64, f64)| {
            let p = sigmoid(x).clamp(1e-7, 1.0 - 1e-7);
            -(z * p.ln() + (1.0 - z) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / 4.0;
    close(bce_p, clipped, "bce probabilities");
    // label smoothing 0.2: labels 0.9 / 0.1
    let smooth = BinaryCrossentropy::new()
        .with_from_logits(true)
        .with_label_smoothing(0.2);
    let zs = t(&[0.9, 0.1, 0.1, 0.9], &[2, 2]);
    close(
        smooth.call(&z, &x).unwrap().to_scalar().unwrap(),
        BinaryCrossentropy::new()
            .with_from_logits(true)
            .call(&zs, &x)
            .unwrap()
            .to_scalar()
            .unwrap(),
        "bce smoothing",
    );

    // categorical from logits = sparse from logits
    let cce = CategoricalCrossentropy::new()
        .with_from_logits(true)
        .call(&z, &x)
        .unwrap();
    let labels = t(&[0.0, 1.0], &[2]);
    let scce = SparseCategoricalCrossentropy::new()
        .with_from_logits(true)
        .call(&labels, &x)
        .unwrap();
    let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
    let want = ((lse(2.0, -1.0) - 2.0) + (lse(0.5, 30.0) - 30.0)) / 2.0;
    close(cce.to_scalar().unwrap(), want, "cce logits");
    close(scce.to_scalar().unwrap(), want, "scce logits");
    // labels with a trailing axis of 1 are accepted
    let scce2 = SparseCategoricalCrossentropy::new()
        .with_from_logits(true)
        .call(&labels.reshape([2, 1]).unwrap(), &x)
        .unwrap();
    close(scce2.to_scalar().unwrap(), want, "scce [n, 1] labels");

    // from (unnormalized) probabilities: renormalized, then -ln p_label
    let p = t(&[0.2, 0.6, 0.5, 0.5], &[2, 2]);
    let want = (-(0.25f64).ln() - (0.5f64).ln()) / 2.0;
    close(
        CategoricalCrossentropy::new()
            .call(&z, &p)
            .unwrap()
            .to_scalar()
            .unwrap(),
        want,
        "cce probs",
    );
    close(
        SparseCategoricalCrossentropy::new()
            .call(&labels, &p)
            .unwrap()
            .to_scalar()
            .unwrap(),
        want,
        "scce probs",
    );
}

#[test]
fn losses_are_differentiable() {
    let y = t(&[0.0, 1.0, 1.0, 0.0, 0.0, 1.0], &[3, 2]);
    let p = t(&[0.3, 1.7, -0.4, 0.9, 2.2, -1.3], &[3, 2]);
    let probs = t(&[0.3, 0.6, 0.2, 0.9, 0.45, 0.15], &[3, 2]);
    let labels = t(&[1.0, 0.0, 1.0], &[3]);
    let opts = GradcheckOptions::default();
    type Case<'a> = (
        &'a str,
        Box<dyn Loss<f64>>,
        &'a Tensor<f64>,
        &'a Tensor<f64>,
    );
    let losses: Vec<Case> = vec![
        ("mse", Box::new(MeanSquaredError::new()), &y, &p),
        ("mae", Box::new(MeanAbsoluteError::new()), &y, &p),
        ("huber", Box::new(Huber::new().with_delta(0.8)), &y, &p),
        (
            "bce logits",
            Box::new(
                BinaryCrossentropy::new()
                    .with_from_logits(true)
                    .with_label_smoothing(0.1),
            ),
            &y,
            &p,
        ),
        ("bce probs", Box::new(BinaryCrossentropy::new()), &y, &probs),
        (
            "cce logits",
            Box::new(
                CategoricalCrossentropy::new()
                    .with_from_logits(true)
                    .with_label_smoothing(0.1),
            ),
            &y,
            &p,
        ),
        (
            "cce probs",
            Box::new(CategoricalCrossentropy::new()),
            &y,
            &probs,
        ),
        (
            "scce logits",
            Box::new(SparseCategoricalCrossentropy::new().with_from_logits(true)),
            &labels,
            &p,
        ),
        (
            "scce probs",
            Box::new(SparseCategoricalCrossentropy::new().with_reduction(Reduction::Sum)),
            &labels,
            &probs,
        ),
    ];
    for (name, loss, target, pred) in losses {
        let report = gradcheck(
            |v| {
                loss.call(target, &v[0])
                    .map_err(|e| rime_tape::Error::InvalidArgument {
                        call: "loss",
                        msg: e.to_string(),
                    })
            },
            std::slice::from_ref(pred),
            &opts,
        );
        assert!(report.is_ok(), "{name}: {:?}", report.err());
    }
}

#[test]
fn weighted_losses() {
    let y = t(&[0.0, 0.0, 0.0, 0.0], &[2, 2]);
    let p = t(&[1.0, 1.0, 2.0, 2.0], &[2, 2]);
    let w = t(&[1.0, 0.5], &[2]);
    // per sample [1, 4]; weighted [1, 2]; mean over 2 samples
    close(
        MeanSquaredError::new()
            .call_weighted(&y, &p, &w)
            .unwrap()
            .to_scalar()
            .unwrap(),
        1.5,
        "weighted",
    );
    assert!(
        MeanSquaredError::new()
            .call_weighted(&y, &p, &t(&[1.0; 3], &[3]))
            .is_err()
    );
    assert!(
        MeanSquaredError::new()
            .call_weighted(&y, &p, &t(&[1.0; 4], &[2, 2]))
            .is_err()
    );
}

#[test]
fn loss_errors_name_the_loss_and_shapes() {
    let y = t(&[0.0; 6], &[2, 3]);
    let p = t(&[0.0; 6], &[3, 2]);
    let e = Loss::call(&MeanSquaredError::new(), &y, &p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mean_squared_error") && e.contains("[2, 3]") && e.contains("[3, 2]"),
        "{e}"
    );
    let e = Loss::call(
        &SparseCategoricalCrossentropy::new(),
        &t(&[0.5, 1.0, 0.0], &[3]),
        &p,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("label 0.5"), "{e}");
    assert!(
        Loss::call(
            &SparseCategoricalCrossentropy::new(),
            &t(&[-1.0, 1.0, 0.0], &[3]),
            &p
        )
        .is_err()
    );
    assert!(
        Loss::call(
            &SparseCategoricalCrossentropy::new(),
            &t(&[1.0, 0.0], &[2]),
            &p
        )
        .is_err()
    );
    assert!(Loss::call(&CategoricalCrossentropy::new(), &y, &p).is_err());
    assert!(Loss::call(&Huber::new().with_delta(0.0), &p, &p).is_err());
    assert!(Loss::call(&BinaryCrossentropy::new().with_label_smoothing(2.0), &p, &p).is_err());
    assert!(
        Loss::call(
            &MeanSquaredError::new(),
            &Tensor::scalar(1.0),
            &Tensor::scalar(1.0)
        )
        .is_err()
    );
}

#[test]
fn metrics_accumulate_over_batches() {
    let mut acc = SparseCategoricalAccuracy::new();
    acc.update_state(&t(&[0.0, 1.0], &[2]), &t(&[0.9, 0.1, 0.2, 0.8], &[2, 2]))
        .unwrap();
    acc.update_state(&t(&[1.0], &[1]), &t(&[0.6, 0.4], &[1, 2]))
        .unwrap();
    close(acc.result(), 2.0 / 3.0, "sparse accuracy over 3 samples");
    assert_eq!(acc.name(), "sparse_categorical_accuracy");
    assert!(
        acc.update_state(&t(&[2.0], &[1]), &t(&[0.6, 0.4], &[1, 2]))
            .is_err()
    );
    close(acc.result(), 2.0 / 3.0, "a failed update changes nothing");

    let mut cat = CategoricalAccuracy::new();
    cat.update_state(
        &t(&[0.0, 1.0, 1.0, 0.0], &[2, 2]),
        &t(&[0.3, 0.7, 0.4, 0.6], &[2, 2]),
    )
    .unwrap();
    close(cat.result(), 0.5, "categorical");
    let mut bin = BinaryAccuracy::new().with_threshold(0.0);
    bin.update_state(
        &t(&[1.0, 0.0, 1.0, 0.0], &[4]),
        &t(&[2.0, -1.0, -0.5, 0.1], &[4]),
    )
    .unwrap();
    close(bin.result(), 0.5, "binary with logits threshold");
    let mut plain = Accuracy::new();
    plain
        .update_state(&t(&[1.0, 2.0], &[2]), &t(&[1.0, 3.0], &[2]))
        .unwrap();
    close(plain.result(), 0.5, "accuracy");
    assert!(
        plain
            .update_state(&t(&[1.0], &[1]), &t(&[1.0, 3.0], &[2]))
            .is_err()
    );

    let mut mean = Mean::named("loss");
    mean.update_state(&Tensor::scalar(2.0f32)).unwrap();
    mean.update_state_weighted(&t(&[4.0, 8.0], &[2]), &t(&[1.0, 0.0], &[2]))
        .unwrap();
    close(mean.result(), 3.0, "weighted mean");
    mean.reset_state();
    assert_eq!(mean.result(), 0.0);
}

/// Integer labels (`i64`, as datasets read them from files): the sparse
/// loss and metric give exactly what the float-label form gives, and the
/// same gradient; bad labels are errors naming the loss, the label and the
/// shapes; other losses convert integer targets to floats (Keras' cast).
#[test]
fn integer_labels_match_float_labels() {
    let logits = t(
        &[
            0.3, -1.2, 2.0, 0.0, 0.5, 0.5, -3.0, 1.0, 0.1, 4.0, -0.5, 0.2,
        ],
        &[4, 3],
    );
    let floats = t(&[2.0, 0.0, 1.0, 0.0], &[4]);
    let ints = Tensor::vector(vec![2i64, 0, 1, 0]);
    for from_logits in [true, false] {
        let pred = if from_logits {
            logits.clone()
        } else {
            logits.softmax(-1).unwrap()
        };
        for r in [Reduction::Mean, Reduction::Sum, Reduction::None] {
            let loss = SparseCategoricalCrossentropy::new()
                .with_from_logits(from_logits)
                .with_reduction(r);
            let a = Loss::call(&loss, &floats, &pred).unwrap();
            let b = loss.call_int(&ints, &pred).unwrap();
            assert_eq!(a, b, "from_logits {from_logits}, {r:?}");
            // [batch, 1] labels too
            let col = ints.reshape([4, 1]).unwrap();
            assert_eq!(loss.call_int(&col, &pred).unwrap(), a);
        }
    }
    // by hand: mean of logsumexp(row) - row[label]
    let lse = |r: &[f64]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
    let rows = logits.to_vec();
    let want = [2usize, 0, 1, 0]
        .iter()
        .enumerate()
        .map(|(i, &l)| lse(&rows[i * 3..i * 3 + 3]) - rows[i * 3 + l])
        .sum::<f64>()
        / 4.0;
    let scce = SparseCategoricalCrossentropy::new().with_from_logits(true);
    close(
        scce.call_int(&ints, &logits).unwrap().to_scalar().unwrap(),
        want,
        "sparse cross entropy from i64 labels",
    );
    // the gradient w.r.t. the logits is the float-label one
    let grad = |f: &dyn Fn(&Tensor<f64>) -> Tensor<f64>| {
        let tape = rime_tape::GradientTape::new();
        tape.watch(&logits);
        let l = f(&logits);
        tape.gradient_of(&l, &logits).unwrap()
    };
    assert_eq!(
        grad(&|x| Loss::call(&scce, &floats, x).unwrap()),
        grad(&|x| scce.call_int(&ints, x).unwrap())
    );
    // bad labels: negative, too large, wrong count
    for (labels, needle) in [
        (vec![2i64, -1, 1, 0], "label -1"),
        (vec![2, 0, 3, 0], "label 3"),
    ] {
        let e = scce
            .call_int(&Tensor::vector(labels), &logits)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sparse_categorical_crossentropy")
                && e.contains(needle)
                && e.contains("[4, 3]"),
            "{e}"
        );
    }
    let e = scce
        .call_int(&Tensor::vector(vec![0i64, 1]), &logits)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2]") && e.contains("[4, 3]"), "{e}");
    // a regression loss converts integer targets
    let y = t(&[1.0, 2.0], &[2, 1]);
    let mse = MeanSquaredError::new();
    assert_eq!(
        mse.call_int(&Tensor::from_vec(vec![3i64, -1], [2, 1]).unwrap(), &y)
            .unwrap()
            .to_scalar()
            .unwrap(),
        (4.0 + 9.0) / 2.0
    );
    // the metric
    let mut a = SparseCategoricalAccuracy::new();
    let mut b = SparseCategoricalAccuracy::new();
    a.update_state(&floats, &logits).unwrap();
    b.update_state_int(&ints, &logits).unwrap();
    assert_eq!(a.result(), b.result());
    close(
        b.result(),
        0.75,
        "rows 0, 2 and 3 pick their labels' classes",
    );
    assert!(
        b.update_state_int(&Tensor::vector(vec![5i64, 0, 0, 0]), &logits)
            .is_err()
    );
    close(b.result(), 0.75, "a failed update changes nothing");
    // targets from a dataset: either kind through `call_target`
    let target: rime_layers::Target<f64> = ints.clone().into();
    assert_eq!(
        scce.call_target(&target, &logits).unwrap(),
        scce.call_int(&ints, &logits).unwrap()
    );
}
