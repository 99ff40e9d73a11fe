//! Recorded small-op overhead: a chain of 1000 adds of two 16-element
//! tensors, forward and backward, in microseconds per op.
//!
//! `cargo run --release --example bench_tape` prints
//! `rime chain1000 fwd+bwd <x> us/op` (the median of several runs; `--quick`
//! for fewer).

use std::time::Instant;

use rime::prelude::*;

fn chain(v: &Tensor<f32>, c: &Tensor<f32>) -> Tensor<f32> {
    let tape = GradientTape::new();
    tape.watch(v);
    let mut z = v.clone();
    for _ in 0..1000 {
        z = z.add(c).expect("same shapes");
    }
    let s = z.sum_all();
    tape.gradient_of(&s, v).expect("recorded and connected")
}

/// `--quick`: 5 runs instead of 31.
fn parse_quick() -> Result<bool, lexopt::Error> {
    let mut quick = false;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            lexopt::Arg::Long("quick") => quick = true,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(quick)
}

fn main() -> Result<(), lexopt::Error> {
    let quick = parse_quick()?;
    let v = Tensor::<f32>::ones([16]).expect("a small tensor");
    let c = Tensor::<f32>::ones([16]).expect("a small tensor");
    let g = chain(&v, &c);
    assert_eq!(g.to_vec(), vec![1.0; 16], "gradient of the chain");
    let mut times = Vec::new();
    for _ in 0..if quick { 5 } else { 31 } {
        let t = Instant::now();
        for _ in 0..10 {
            std::hint::black_box(chain(&v, &c));
        }
        times.push(t.elapsed().as_secs_f64() / 10.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("rime chain1000 fwd+bwd {:.3} us/op", median * 1e6 / 1000.0);
    Ok(())
}
