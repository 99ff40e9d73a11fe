//! Square f32 matrix products, in GFLOP/s (2n³ / t), one line per size:
//!
//! ```text
//! cargo run --release --example bench_matmul -- --sizes 256,1024,2048 --reps 7
//! rime sgemm n=256 <x> GFLOP/s (best <y>, threads=<t>)
//! ```
//!
//! `<x>` is the median over `--reps` timed repetitions (each repetition runs
//! enough products to last about 50 ms), `<y>` the best one. The thread count
//! is rayon's (`RAYON_NUM_THREADS`). `--mlp` adds the MLP's products
//! (forward `x·W` and the weight gradient `xᵀ·dy`). Every product is checked
//! against f64 dot products first; a wrong result exits non-zero.

use std::process::ExitCode;
use std::time::Instant;

use rime::tensor::{Tensor, num_threads, seeded_rng};

struct Args {
    sizes: Vec<usize>,
    reps: usize,
    mlp: bool,
}

fn parse() -> Result<Args, String> {
    use lexopt::prelude::*;
    const USAGE: &str = "usage: bench_matmul [--sizes 64,128,...] [--reps N] [--mlp]";
    let mut a = Args {
        sizes: vec![64, 128, 256, 512, 1024, 2048],
        reps: 7,
        mlp: false,
    };
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| format!("{e} ({USAGE})");
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("sizes") => {
                let v = parser.value().map_err(err)?.string().map_err(err)?;
                a.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--sizes {v}: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            Long("reps") => {
                a.reps = parser.value().map_err(err)?.parse().map_err(err)?;
                if a.reps == 0 {
                    return Err("--reps must be at least 1".into());
                }
            }
            Long("mlp") => a.mlp = true,
            Short('h') | Long("help") => return Err(USAGE.into()),
            _ => return Err(err(arg.unexpected())),
        }
    }
    Ok(a)
}

/// `op(a)·op(b)` checked at sampled entries against an f64 dot product.
fn check(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    ta: bool,
    tb: bool,
    c: &Tensor<f32>,
) -> Result<(), String> {
    let (ad, bd) = (a.dims(), b.dims());
    let (m, k) = if ta { (ad[1], ad[0]) } else { (ad[0], ad[1]) };
    let n = if tb { bd[0] } else { bd[1] };
    let (av, bv, cv) = (a.as_slice(), b.as_slice(), c.as_slice());
    for s in 0..64 {
        let (i, j) = ((s * 7919) % m, (s * 104_729) % n);
        let want: f64 = (0..k)
            .map(|p| {
                let x = if ta { av[p * m + i] } else { av[i * k + p] };
                let y = if tb { bv[j * k + p] } else { bv[p * n + j] };
                x as f64 * y as f64
            })
            .sum();
        let got = cv[i * n + j] as f64;
        if (got - want).abs() > 1e-4 * (k as f64).sqrt() * (1.0 + want.abs()) {
            return Err(format!("C[{i}, {j}] = {got}, want {want} ({m}x{k}x{n})"));
        }
    }
    Ok(())
}

/// Median and best GFLOP/s of `op(a)·op(b)`.
fn measure(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    ta: bool,
    tb: bool,
    reps: usize,
) -> Result<(f64, f64), String> {
    let product = || a.matmul_t(b, ta, tb).map_err(|e| e.to_string());
    let c = product()?;
    check(a, b, ta, tb, &c)?;
    let flop = 2.0 * (c.len() as f64) * if ta { a.dims()[0] } else { a.dims()[1] } as f64;
    // products per repetition: about 50 ms of work at 100 GFLOP/s
    let inner = ((5e9 / flop) as usize).clamp(1, 100_000);
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            std::hint::black_box(product()?);
        }
        rates.push(flop * inner as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() / 2], rates[rates.len() - 1]))
}

fn randn(shape: [usize; 2], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn run(args: &Args) -> Result<(), String> {
    let threads = num_threads();
    for &n in &args.sizes {
        let (a, b) = (randn([n, n], 1), randn([n, n], 2));
        let (median, best) = measure(&a, &b, false, false, args.reps)?;
        println!("rime sgemm n={n} {median:.1} GFLOP/s (best {best:.1}, threads={threads})");
    }
    if args.mlp {
        let (x, w, dy) = (
            randn([128, 784], 3),
            randn([784, 256], 4),
            randn([128, 256], 5),
        );
        let (median, best) = measure(&x, &w, false, false, args.reps)?;
        println!("rime sgemm 128x784x256 {median:.1} GFLOP/s (best {best:.1}, threads={threads})");
        let (median, best) = measure(&x, &dy, true, false, args.reps)?;
        println!(
            "rime sgemm t(128x784)x256 {median:.1} GFLOP/s (best {best:.1}, threads={threads})"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse().and_then(|a| run(&a));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_matmul: {e}");
            ExitCode::FAILURE
        }
    }
}
