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
//! (forward `x·W`, the weight gradient `xᵀ·dy` and the input gradient
//! `dy·Wᵀ` at batch 128 and 2048, widths 256, 1024 and 2048). `--compare`
//! also measures matrixmultiply's kernels (the portable fallback), each
//! repetition alternating between the two, and prints those lines with
//! `matrixmultiply` in place of `rime`. Every product is checked against
//! f64 dot products first; a wrong result exits non-zero. `--cpu` (Linux)
//! divides by the CPU time of all the process's threads instead of wall
//! time, giving a rate per core: on a machine shared with other work that
//! is closer to what the kernel does on cores of its own, and with several
//! threads it shows what a split costs (time spent waiting or yielding
//! counts, idle parked threads do not). `--shapes` adds the 8 products of
//! one training step of the bench MLP (784-256-256-10, batch 128) with the
//! labels and transposes of `../shared/bench/py_peers_sweep.py --shapes`
//! (and of `scripts/gemm_peer`), so rows join by label across frameworks;
//! `--sizes ''` leaves out the square sizes.

use std::process::ExitCode;
use std::time::Instant;

use rime::tensor::{Tensor, num_threads, seeded_rng, use_own_gemm};

struct Args {
    sizes: Vec<usize>,
    reps: usize,
    mlp: bool,
    shapes: bool,
    compare: bool,
    cpu: bool,
}

/// The peers' `MLP_SHAPES` (py_peers_sweep.py): `(label, m, k, n, ta, tb)`
/// for `C = op(A)·op(B)`, `C` being `m×n`; with `ta`, `A` is stored `k×m`,
/// with `tb`, `B` is stored `n×k`.
const PEER_SHAPES: [(&str, usize, usize, usize, bool, bool); 8] = [
    ("(128x784)(784x256)", 128, 784, 256, false, false), // forward, layer 1
    ("(128x256)(256x256)", 128, 256, 256, false, false), // forward, layer 2
    ("(128x256)(256x10)", 128, 256, 10, false, false),   // forward, layer 3
    ("(784x128)^T(128x256)", 784, 128, 256, true, false), // dW1 = xᵀ·dy1
    ("(256x128)^T(128x256)", 256, 128, 256, true, false), // dW2 = h1ᵀ·dy2
    ("(256x128)^T(128x10)", 256, 128, 10, true, false),  // dW3 = h2ᵀ·dy3
    ("(128x256)(256x256)^T", 128, 256, 256, false, true), // dh1 = dy2·W2ᵀ
    ("(128x10)(256x10)^T", 128, 10, 256, false, true),   // dh2 = dy3·W3ᵀ
];

fn parse() -> Result<Args, String> {
    use lexopt::prelude::*;
    const USAGE: &str = "usage: bench_matmul [--sizes 64,128,...] [--reps N] [--mlp] [--shapes] [--compare] [--cpu]";
    let mut a = Args {
        sizes: vec![64, 128, 256, 512, 1024, 2048],
        reps: 7,
        mlp: false,
        shapes: false,
        compare: false,
        cpu: false,
    };
    let mut parser = lexopt::Parser::from_env();
    let err = |e: lexopt::Error| format!("{e} ({USAGE})");
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("sizes") => {
                let v = parser.value().map_err(err)?.string().map_err(err)?;
                a.sizes = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
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
            Long("shapes") => a.shapes = true,
            Long("compare") => a.compare = true,
            Long("cpu") => a.cpu = true,
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

/// Median and best GFLOP/s of `op(a)·op(b)` for each kernel choice in
/// `own` (see `rime::tensor::use_own_gemm`), repetitions interleaved.
fn measure(
    a: &Tensor<f32>,
    b: &Tensor<f32>,
    ta: bool,
    tb: bool,
    reps: usize,
    own: &[bool],
    by_cpu: bool,
) -> Result<Vec<(f64, f64)>, String> {
    let product = || a.matmul_t(b, ta, tb).map_err(|e| e.to_string());
    let mut flop = 0.0;
    for &o in own {
        use_own_gemm(o);
        let c = product()?;
        check(a, b, ta, tb, &c)?;
        flop = 2.0 * (c.len() as f64) * if ta { a.dims()[0] } else { a.dims()[1] } as f64;
    }
    // products per repetition: about 50 ms of work at 100 GFLOP/s
    let inner = ((5e9 / flop) as usize).clamp(1, 100_000);
    let mut rates = vec![Vec::with_capacity(reps); own.len()];
    for _ in 0..reps {
        for (v, &o) in own.iter().enumerate() {
            use_own_gemm(o);
            let (t, cpu) = (Instant::now(), cpu_seconds());
            for _ in 0..inner {
                std::hint::black_box(product()?);
            }
            let secs = match (cpu, cpu_seconds()) {
                // CPU time, which a loaded machine inflates less
                (Some(c0), Some(c1)) if by_cpu => c1 - c0,
                _ => t.elapsed().as_secs_f64(),
            };
            rates[v].push(flop * inner as f64 / secs / 1e9);
        }
    }
    use_own_gemm(true);
    Ok(rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            (r[r.len() / 2], r[r.len() - 1])
        })
        .collect())
}

/// CPU time of all the process's threads so far (Linux: the first field of
/// each `/proc/self/task/*/schedstat`, in nanoseconds).
fn cpu_seconds() -> Option<f64> {
    let mut ns = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<f64>().ok()?;
    }
    Some(ns / 1e9)
}

fn randn(shape: [usize; 2], seed: u64) -> Tensor<f32> {
    Tensor::rand_normal(shape, 0.0, 1.0, &mut seeded_rng(seed)).expect("valid parameters")
}

fn run(args: &Args) -> Result<(), String> {
    let threads = num_threads();
    let own: &[bool] = if args.compare {
        &[true, false]
    } else {
        &[true]
    };
    let print = |what: &str, results: Vec<(f64, f64)>| {
        for ((median, best), &o) in results.into_iter().zip(own) {
            let who = if o { "rime" } else { "matrixmultiply" };
            println!("{who} sgemm {what} {median:.1} GFLOP/s (best {best:.1}, threads={threads})");
        }
    };
    for &n in &args.sizes {
        let (a, b) = (randn([n, n], 1), randn([n, n], 2));
        print(
            &format!("n={n}"),
            measure(&a, &b, false, false, args.reps, own, args.cpu)?,
        );
    }
    if args.shapes {
        for (label, m, k, n, ta, tb) in PEER_SHAPES {
            let a = randn(if ta { [k, m] } else { [m, k] }, 7);
            let b = randn(if tb { [n, k] } else { [k, n] }, 8);
            print(label, measure(&a, &b, ta, tb, args.reps, own, args.cpu)?);
        }
    }
    if args.mlp {
        for (batch, width) in [(128, 256), (2048, 256), (128, 1024), (128, 2048)] {
            let (x, w, dy) = (
                randn([batch, 784], 3),
                randn([784, width], 4),
                randn([batch, width], 5),
            );
            let what = format!("{batch}x784x{width}");
            print(
                &what,
                measure(&x, &w, false, false, args.reps, own, args.cpu)?,
            );
            let what = format!("t({batch}x784)x{width}");
            print(
                &what,
                measure(&x, &dy, true, false, args.reps, own, args.cpu)?,
            );
            let w2 = randn([width, width], 6);
            let what = format!("{batch}x{width}xt({width}x{width})");
            print(
                &what,
                measure(&dy, &w2, false, true, args.reps, own, args.cpu)?,
            );
        }
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
