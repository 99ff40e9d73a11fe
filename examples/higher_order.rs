//! Second derivatives with nested tapes: a Hessian-vector product of a small
//! MLP loss, and a gradient penalty ‖∇ₓf‖² differentiated with respect to
//! the weights (WGAN-GP style). Both are checked against central finite
//! differences in f64; the program exits non-zero if either disagrees.
//!
//! ```sh
//! cargo run --release --example higher_order
//! ```

use std::process::ExitCode;

use rime::prelude::*;

type T = Tensor<f64>;

fn mlp(x: &T, w1: &T, w2: &T) -> rime::tensor::Result<T> {
    x.matmul(w1)?.tanh().matmul(w2)
}

fn loss(x: &T, y: &T, w1: &T, w2: &T) -> rime::tensor::Result<T> {
    Ok(mlp(x, w1, w2)?.sub(y)?.square().mean_all())
}

/// ∇_{w1} loss, computed with a tape (recorded on any outer tape).
fn grad_w1(x: &T, y: &T, w1: &T, w2: &T) -> rime::Result<T> {
    let tape = GradientTape::new();
    tape.watch(w1);
    let l = loss(x, y, w1, w2)?;
    Ok(tape.gradient_of(&l, w1)?)
}

fn max_rel_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
        .fold(0.0, f64::max)
}

fn main() -> rime::Result<ExitCode> {
    let mut rng = seeded_rng(5);
    let x = T::rand_normal([8, 3], 0.0, 1.0, &mut rng)?;
    let y = T::rand_normal([8, 2], 0.0, 1.0, &mut rng)?;
    let w1 = T::rand_normal([3, 4], 0.0, 0.7, &mut rng)?;
    let w2 = T::rand_normal([4, 2], 0.0, 0.7, &mut rng)?;
    let v = T::rand_normal([3, 4], 0.0, 1.0, &mut rng)?;

    // Hessian-vector product: H v = ∇_{w1} (∇_{w1} loss · v)
    let outer = GradientTape::new();
    outer.watch(&w1);
    let g = grad_w1(&x, &y, &w1, &w2)?;
    let gv = g.mul(&v)?.sum_all();
    let hv = outer.gradient_of(&gv, &w1)?;
    // finite differences of the gradient along v
    let eps = 1e-5;
    let g_plus = grad_w1(&x, &y, &w1.add(&v.mul_scalar(eps))?, &w2)?;
    let g_minus = grad_w1(&x, &y, &w1.sub(&v.mul_scalar(eps))?, &w2)?;
    let hv_fd = g_plus.sub(&g_minus)?.div_scalar(2.0 * eps);
    let hvp_err = max_rel_err(&hv.to_vec(), &hv_fd.to_vec());
    println!("Hessian-vector product of an MLP loss (w1: 3×4):");
    println!("  tape          {:?}", &hv.to_vec()[..4]);
    println!("  finite diff.  {:?}", &hv_fd.to_vec()[..4]);
    println!("  max relative error {hvp_err:.2e}");

    // gradient penalty: P(w1, w2) = mean over samples of ‖∇ₓ f(x)‖², f = Σ outputs
    let penalty = |w1: &T, w2: &T| -> rime::tape::Result<T> {
        let tape = GradientTape::new();
        tape.watch(&x);
        let f = mlp(&x, w1, w2)?.sum_all();
        let gx = tape.gradient_of(&f, &x)?;
        Ok(gx.square().sum(&[1], false)?.mean_all())
    };
    let report = gradcheck(
        |ws: &[T]| penalty(&ws[0], &ws[1]),
        &[w1.clone(), w2.clone()],
        &GradcheckOptions::default(),
    );
    let outer = GradientTape::new();
    outer.watch(&w1);
    outer.watch(&w2);
    let p = penalty(&w1, &w2)?;
    let dp = outer.gradient(&p, &[&w1, &w2])?;
    println!("gradient penalty ‖∇ₓf‖² = {:.6}", p.to_scalar()?);
    println!(
        "  d/dw2 (tape) {:?}",
        &dp[1].as_ref().expect("connected").to_vec()[..4]
    );
    let ok_gp = match &report {
        Ok(r) => {
            println!(
                "  gradcheck against central differences: {} elements, worst |error| {:.2e}",
                r.checked, r.max_abs_error
            );
            true
        }
        Err(e) => {
            eprintln!("  gradcheck FAILED: {e}");
            false
        }
    };
    if hvp_err > 1e-5 || !ok_gp {
        eprintln!("FAILED: second derivatives disagree with finite differences");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
