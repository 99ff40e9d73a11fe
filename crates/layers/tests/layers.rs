//! Layers one by one: values worked out by hand, gradients against central
//! differences, weights and losses bookkeeping, and bad input. The Keras
//! reference values for BatchNormalization, LayerNormalization, Embedding
//! and the merge layers are checked in the facade's tests/layer_parity.rs.

use std::sync::Arc;

use rime_layers::activations::Activation;
use rime_layers::constraints::WeightConstraint;
use rime_layers::initializers::Initializer;
use rime_layers::optimizers::{Optimizer, Sgd};
use rime_layers::regularizers::Regularizer;
use rime_layers::{
    ActivationLayer, Add, CallContext, Concatenate, Dense, Dropout, Embedding, Error, Flatten,
    Lambda, Layer, LayerBase, LayerRef, Multiply, Reshape, Sequential,
};
use rime_tape::GradientTape;
use rime_tensor::{PartialShape, Tensor};

fn t(v: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

fn constant_dense(units: usize, kernel: &[f64], bias: &[f64]) -> Dense<f64> {
    let d = Dense::new(units);
    d.call(&Tensor::zeros([1, kernel.len() / units]).unwrap(), false)
        .unwrap();
    d.set_weights(&[t(kernel, &[kernel.len() / units, units]), t(bias, &[units])])
        .unwrap();
    d
}

#[test]
fn dense_computes_x_kernel_plus_bias_then_activation() {
    let d = constant_dense(2, &[1.0, -1.0, 2.0, 0.5, -3.0, 1.0], &[0.5, -0.25]);
    let x = t(&[1.0, 2.0, 3.0, -1.0, 0.0, 1.0], &[2, 3]);
    // row 0: [1 + 4 - 9 + .5, -1 + 1 + 3 - .25]; row 1: [-1 - 3 + .5, 1 + 1 - .25]
    assert_eq!(
        d.call(&x, false).unwrap().to_vec(),
        vec![-3.5, 2.75, -3.5, 1.75]
    );

    let relu = Dense::<f64>::new(2).activation(Activation::Relu);
    relu.call(&x, false).unwrap();
    relu.set_weights(&d.get_weights()).unwrap();
    assert_eq!(
        relu.call(&x, false).unwrap().to_vec(),
        vec![0.0, 2.75, 0.0, 1.75]
    );

    // leading axes pass through: [2, 1, 3] -> [2, 1, 2]
    let y3 = d.call(&x.reshape([2, 1, 3]).unwrap(), false).unwrap();
    assert_eq!(y3.shape(), &[2, 1, 2]);
    assert_eq!(y3.to_vec(), vec![-3.5, 2.75, -3.5, 1.75]);

    let no_bias = Dense::<f64>::new(4).use_bias(false);
    no_bias.call(&x, false).unwrap();
    assert_eq!(no_bias.weights().len(), 1);
}

#[test]
fn dense_gradients_match_finite_differences() {
    let x = t(&[0.3, -1.2, 0.7, 2.0, -0.4, 0.1], &[2, 3]);
    let k = t(&[0.5, -0.2, 0.1, 0.4, -0.3, 0.8], &[3, 2]);
    let b = t(&[0.05, -0.1], &[2]);
    // the layer's gradient w.r.t. its variables, against central differences
    let d = Dense::<f64>::new(2).activation(Activation::Tanh);
    d.call(&x, false).unwrap();
    d.set_weights(&[k.clone(), b.clone()]).unwrap();
    let tape = GradientTape::persistent();
    let y = d.call(&x, true).unwrap().square().sum_all();
    let vars = d.trainable_weights();
    let g = tape.gradient(&y, &vars).unwrap();
    let eps = 1e-6;
    for (vi, var) in vars.iter().enumerate() {
        let base = var.to_vec();
        for j in 0..base.len() {
            let at = |delta: f64| {
                let mut p = base.clone();
                p[j] += delta;
                var.assign(&Tensor::from_vec(p, var.shape()).unwrap())
                    .unwrap();
                let out = d
                    .call(&x, false)
                    .unwrap()
                    .square()
                    .sum_all()
                    .to_scalar()
                    .unwrap();
                var.assign(&Tensor::from_vec(base.clone(), var.shape()).unwrap())
                    .unwrap();
                out
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            let analytic = g[vi].as_ref().unwrap().to_vec()[j];
            assert!(
                (numeric - analytic).abs() < 1e-7,
                "{}[{j}]: {analytic} vs {numeric}",
                var.name()
            );
        }
    }
}

/// Dense records one fused op for rank-2 inputs and the fusible
/// activations: the same bits as the unfused matmul, add and activation,
/// forward and backward, and its kernel gradient stays a deferred product
/// (the optimizer's fused update path).
#[test]
fn dense_fuses_product_bias_and_activation_with_the_unfused_bits() {
    let x = Tensor::from_vec(
        (0..28).map(|i| (i as f32 * 0.37).sin() * 2.0).collect(),
        [7, 4],
    )
    .unwrap();
    for act in [
        Activation::Linear,
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu, // not fusible: the unfused path
    ] {
        for use_bias in [true, false] {
            let d = Dense::<f32>::new(5).activation(act).use_bias(use_bias);
            d.call(&x, false).unwrap();
            let vars = d.trainable_weights();
            let mut w = vec![
                Tensor::from_vec((0..20).map(|i| (i as f32 * 0.71).cos()).collect(), [4, 5])
                    .unwrap(),
            ];
            if use_bias {
                w.push(Tensor::vector(vec![0.3f32, -0.2, 0.0, -0.0, 1.5]));
            }
            d.set_weights(&w).unwrap();
            let tape = GradientTape::new();
            let y = d.call(&x, true).unwrap();
            let loss = y.square().sum_all();
            let deferred = tape.gradient_deferred(&loss, &vars).unwrap();
            assert!(
                matches!(deferred[0], Some(rime_tape::DeferredGradient::Product(_))),
                "{act:?}: the kernel gradient is deferred"
            );
            // the unfused chain on the same variables
            let tape = GradientTape::new();
            let mut z = x.matmul(&vars[0].value()).unwrap();
            if use_bias {
                z = z.add(&vars[1].value()).unwrap();
            }
            let want_y = act.apply(&z).unwrap();
            let want = tape.gradient(&want_y.square().sum_all(), &vars).unwrap();
            let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&want_y), "{act:?} forward");
            for (g, w) in deferred.into_iter().zip(want) {
                let g = g.unwrap().into_tensor().unwrap();
                assert_eq!(bits(&g), bits(&w.unwrap()), "{act:?} gradient");
            }
        }
    }
}

#[test]
fn dense_rejects_inputs_it_was_not_built_for() {
    let d = Dense::<f32>::new(3).named("head");
    d.call(&Tensor::ones([2, 4]).unwrap(), false).unwrap();
    let before = d.get_weights();
    let err = d.call(&Tensor::ones([2, 5]).unwrap(), false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    assert!(
        msg.contains("head") && msg.contains("[2, 5]") && msg.contains('4'),
        "{msg}"
    );
    assert!(d.call(&Tensor::scalar(1.0), false).is_err());
    assert_eq!(d.get_weights(), before);
    assert!(
        Dense::<f32>::new(0)
            .call(&Tensor::ones([1, 2]).unwrap(), false)
            .is_err()
    );
}

#[test]
fn regularizers_reach_losses_and_constraints_hold_after_updates() {
    let d = Dense::<f64>::new(2)
        .kernel_regularizer(Regularizer::L2 { l2: 0.1 })
        .bias_regularizer(Regularizer::L1 { l1: 0.5 })
        .activity_regularizer(Regularizer::L1 { l1: 0.01 })
        .kernel_constraint(WeightConstraint::NonNeg)
        .bias_initializer(Initializer::Constant { value: -1.0 });
    let x = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let y = d.call(&x, true).unwrap();
    let k = d.kernel().unwrap().to_vec();
    let losses: Vec<f64> = d
        .losses()
        .unwrap()
        .iter()
        .map(|l| l.to_scalar().unwrap())
        .collect();
    let l2: f64 = 0.1 * k.iter().map(|w| w * w).sum::<f64>();
    let activity = 0.01 * y.to_vec().iter().map(|v| v.abs()).sum::<f64>() / 2.0;
    let mut want = vec![l2, 0.5 * 2.0, activity];
    want.sort_by(f64::total_cmp);
    let mut got = losses.clone();
    got.sort_by(f64::total_cmp);
    assert_eq!(got.len(), 3, "{losses:?}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    // a model collects its layers' penalties
    let m = Sequential::new()
        .add(Dense::<f64>::new(1).kernel_regularizer(Regularizer::L1L2 { l1: 0.1, l2: 0.1 }))
        .with_input_shape([2])
        .unwrap();
    assert_eq!(m.losses().unwrap().len(), 1);

    // the constraint: a step that would make kernel entries negative
    let vars = d.trainable_weights();
    let grads: Vec<_> = vars
        .iter()
        .map(|v| Some(Tensor::full(v.shape(), 100.0).unwrap()))
        .collect();
    Sgd::new()
        .learning_rate(1.0)
        .apply_gradients(&grads, &vars)
        .unwrap();
    assert!(d.kernel().unwrap().to_vec().iter().all(|&w| w == 0.0));
    assert!(
        d.bias().unwrap().to_vec().iter().all(|&b| b == -101.0),
        "no constraint on the bias"
    );
}

#[test]
fn dropout_is_seeded_scaled_and_off_in_inference() {
    let x = Tensor::<f64>::ones([200, 50]).unwrap();
    let drop = Dropout::<f64>::new(0.3).seed(5);
    assert_eq!(drop.call(&x, false).unwrap().to_vec(), x.to_vec());
    let y = drop.call(&x, true).unwrap().to_vec();
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
    let frac = 1.0 - kept as f64 / y.len() as f64;
    assert!((frac - 0.3).abs() < 0.02, "dropped {frac}");
    // the same seed gives the same masks; the next call another one
    let again = Dropout::<f64>::new(0.3).seed(5);
    assert_eq!(again.call(&x, true).unwrap().to_vec(), y);
    assert_ne!(again.call(&x, true).unwrap().to_vec(), y);
    // noise_shape [None, 1]: one decision per row
    let rows = Dropout::<f64>::new(0.5)
        .seed(1)
        .noise_shape(vec![None, Some(1)]);
    let r = rows.call(&x, true).unwrap();
    for row in r.to_vec().chunks(50) {
        assert!(row.iter().all(|&v| v == row[0]));
    }
    // constructors do not fail: a bad rate is a typed error naming the
    // layer at build (first call), and the layer stays unbuilt
    for rate in [1.0, -0.1] {
        let bad = Dropout::<f64>::new(rate).named("bad_rate");
        let err = bad.call(&x, false).unwrap_err().to_string();
        assert!(err.contains("bad_rate") && err.contains("rate"), "{err}");
        assert!(!bad.built());
    }
    assert!(Dropout::<f64>::from_config(rime_layers::layers::DropoutConfig::new(1.0)).is_err());
    let bad = Dropout::<f64>::new(0.5).noise_shape(vec![Some(3), None]);
    assert!(bad.call(&x, true).is_err());
}

#[test]
fn shape_and_merge_layers() {
    let x = t(&(0..12).map(f64::from).collect::<Vec<_>>(), &[2, 3, 2]);
    assert_eq!(
        Flatten::<f64>::new().call(&x, false).unwrap().shape(),
        &[2, 6]
    );
    let r = Reshape::<f64>::new(vec![-1, 3]);
    assert_eq!(r.call(&x, false).unwrap().shape(), &[2, 2, 3]);
    assert!(Reshape::<f64>::new(vec![5]).call(&x, false).is_err());
    let bad = Reshape::<f64>::new(vec![-1, -1]).named("two_unknowns");
    let err = bad.call(&x, false).unwrap_err().to_string();
    assert!(err.contains("two_unknowns") && err.contains("-1"), "{err}");
    assert!(bad.compute_output_shape(&[x.shape().into()]).is_err());

    let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = t(&[10.0, 20.0, 30.0, 40.0], &[2, 2]);
    let two = [a.clone(), b.clone()];
    assert_eq!(
        Add::<f64>::new().call_many(&two, false).unwrap()[0].to_vec(),
        vec![11.0, 22.0, 33.0, 44.0]
    );
    assert_eq!(
        Multiply::<f64>::new().call_many(&two, false).unwrap()[0].to_vec(),
        vec![10.0, 40.0, 90.0, 160.0]
    );
    let c = Concatenate::<f64>::new()
        .call_many(&two, false)
        .unwrap()
        .remove(0);
    assert_eq!(c.to_vec(), vec![1.0, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0]);
    let c0 = Concatenate::<f64>::new()
        .axis(0)
        .call_many(&two, false)
        .unwrap()
        .remove(0);
    assert_eq!(c0.shape(), &[4, 2]);
    let odd = t(&[1.0; 3], &[1, 3]);
    assert!(
        Add::<f64>::new()
            .call_many(&[a.clone(), odd.clone()], false)
            .is_err()
    );
    assert!(
        Concatenate::<f64>::new()
            .axis(0)
            .call_many(&[a.clone(), odd], false)
            .is_err()
    );

    let act = ActivationLayer::<f64>::new(Activation::Sigmoid);
    assert!(
        (act.call(&Tensor::scalar(0.0), false)
            .unwrap()
            .to_scalar()
            .unwrap()
            - 0.5)
            .abs()
            < 1e-15
    );
    let lambda = Lambda::<f64>::new("double", |xs| Ok(vec![xs[0].mul_scalar(2.0)]));
    assert_eq!(
        lambda.call(&a, false).unwrap().to_vec(),
        vec![2.0, 4.0, 6.0, 8.0]
    );
}

/// A plain Rust struct built from other layers: an MLP block with a skip.
struct Residual {
    base: LayerBase<f64>,
    inner: LayerRef<f64>,
    outer: LayerRef<f64>,
}

impl Layer<f64> for Residual {
    fn base(&self) -> &LayerBase<f64> {
        &self.base
    }
    fn class_name(&self) -> &'static str {
        "Residual"
    }
    fn call_with(
        &self,
        inputs: &[Tensor<f64>],
        ctx: CallContext,
    ) -> rime_layers::Result<Vec<Tensor<f64>>> {
        let x = self.base.single(inputs)?;
        let h = self.inner.apply(inputs, ctx)?;
        let y = self.outer.apply(&h, ctx)?.remove(0);
        Ok(vec![y.add(x)?])
    }
    fn get_config(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.base.name() })
    }
    fn sublayers(&self) -> Vec<LayerRef<f64>> {
        vec![self.inner.clone(), self.outer.clone()]
    }
    fn compute_output_shape(
        &self,
        input_shapes: &[PartialShape],
    ) -> rime_layers::Result<Vec<PartialShape>> {
        Ok(input_shapes.to_vec())
    }
}

#[test]
fn a_struct_of_layers_is_a_layer() {
    let block = Residual {
        base: LayerBase::new("Residual", None),
        inner: Arc::new(Dense::<f64>::new(4).activation(Activation::Relu)),
        outer: Arc::new(Dense::<f64>::new(3)),
    };
    block.base().mark_built();
    let x = t(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[2, 3]);
    let y = block.call(&x, true).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(block.weights().len(), 4);
    assert_eq!(block.trainable_weights().len(), 4);
    assert_eq!(block.count_params(), 3 * 4 + 4 + 4 * 3 + 3);
    // gradients reach every sublayer weight
    let tape = GradientTape::new();
    let loss = block.call(&x, true).unwrap().square().sum_all();
    let grads = tape.gradient(&loss, &block.trainable_weights()).unwrap();
    assert!(grads.iter().all(Option::is_some));
    block.set_trainable(false);
    assert!(block.trainable_weights().is_empty());
    assert_eq!(block.non_trainable_weights().len(), 4);
    // a model holding the block lists its weights once
    let model = Sequential::new()
        .add(Arc::new(block) as LayerRef<f64>)
        .with_input_shape([3])
        .unwrap();
    assert_eq!(model.weights().len(), 4);
}

#[test]
fn add_loss_is_collected_per_call() {
    let l = Lambda::<f64>::new("penalized", |xs| Ok(vec![xs[0].clone()]));
    l.call(&Tensor::ones([1]).unwrap(), false).unwrap();
    l.base().add_loss(Tensor::scalar(0.25));
    let got: Vec<f64> = l
        .losses()
        .unwrap()
        .iter()
        .map(|t| t.to_scalar().unwrap())
        .collect();
    assert_eq!(got, vec![0.25]);
}

/// `Embedding::lookup` with integer ids: the rows `call` gives for the same
/// ids as floats, the same table gradient (repeated ids accumulate), and
/// out-of-range ids are errors naming the layer and leaving it unchanged.
#[test]
fn embedding_looks_up_integer_ids() {
    let emb = Embedding::<f64>::new(5, 3);
    let ids = Tensor::from_vec(vec![4i64, 0, 4, 2, 1, 4], [2, 3]).unwrap();
    let rows = emb.lookup(&ids).unwrap();
    assert_eq!(rows.dims(), &[2, 3, 3]);
    let float_ids = ids.to_dtype::<f64>().unwrap();
    assert_eq!(rows, emb.call(&float_ids, false).unwrap());
    let table = emb.embeddings().unwrap().clone();
    let tv = table.value().to_vec();
    assert_eq!(rows.to_vec()[..3], tv[12..15]);
    // i32 ids alike
    let small: Tensor<i32> = Tensor::from_vec(vec![4, 0, 4, 2, 1, 4], [2, 3]).unwrap();
    assert_eq!(emb.lookup(&small).unwrap(), rows);

    let grad = |f: &dyn Fn() -> Tensor<f64>| {
        let tape = GradientTape::new();
        let y = f().sum_all();
        tape.gradient_of(&y, &table).unwrap()
    };
    let g = grad(&|| emb.lookup(&ids).unwrap());
    assert_eq!(g, grad(&|| emb.call(&float_ids, false).unwrap()));
    // id 4 appears three times, 3 never
    let gv = g.to_vec();
    assert_eq!(gv[12..15], [3.0, 3.0, 3.0]);
    assert_eq!(gv[9..12], [0.0, 0.0, 0.0]);

    for bad in [vec![0i64, 5], vec![-1, 0]] {
        let e = emb.lookup(&Tensor::vector(bad)).unwrap_err().to_string();
        assert!(
            e.to_lowercase().contains("embedding") && e.contains("[2]"),
            "{e}"
        );
    }
    assert_eq!(
        table.value().to_vec(),
        tv,
        "a failed lookup changes nothing"
    );
}
