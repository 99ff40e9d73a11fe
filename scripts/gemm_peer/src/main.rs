//! The `gemm` crate (the sgemm candle uses) as a peer of rime's
//! `examples/bench_matmul.rs`: same products, same labels, same timing, same
//! output line, so `scripts/bench_gemm_peers.sh` joins the rows by label.
//!
//! ```text
//! cargo run --release --manifest-path scripts/gemm_peer/Cargo.toml -- \
//!     --sizes 256,1024 --shapes --threads 2
//! gemm sgemm n=256 <x> GFLOP/s (best <y>, threads=2)
//! ```
//!
//! Built with gemm's `x86-v4` (AVX-512) feature; gemm picks its kernel at run
//! time, so on a CPU without AVX-512 its AVX2/FMA kernel runs (the line says
//! which). `--threads 1` is `Parallelism::None`, `--threads T` (T > 1)
//! `Parallelism::Rayon(T)`. `<x>` is the median over `--reps` repetitions of
//! about 50 ms each, `<y>` the best; the first product (the warm-up) is checked
//! at 64 entries against f64 dot products, and a wrong result exits non-zero.
//! Not a member of rime's workspace (its own `[workspace]` table): rime's
//! build and CI never build it.

use std::process::ExitCode;
use std::time::Instant;

use gemm::{Parallelism, gemm};

/// py_peers_sweep.py's `MLP_SHAPES`: `(label, m, k, n, ta, tb)` for
/// `C = op(A)·op(B)`; with `ta`, `A` is stored `k×m`, with `tb`, `B` `n×k`.
const PEER_SHAPES: [(&str, usize, usize, usize, bool, bool); 8] = [
    ("(128x784)(784x256)", 128, 784, 256, false, false),
    ("(128x256)(256x256)", 128, 256, 256, false, false),
    ("(128x256)(256x10)", 128, 256, 10, false, false),
    ("(784x128)^T(128x256)", 784, 128, 256, true, false),
    ("(256x128)^T(128x256)", 256, 128, 256, true, false),
    ("(256x128)^T(128x10)", 256, 128, 10, true, false),
    ("(128x256)(256x256)^T", 128, 256, 256, false, true),
    ("(128x10)(256x10)^T", 128, 10, 256, false, true),
];

struct Args {
    sizes: Vec<usize>,
    shapes: bool,
    threads: usize,
    reps: usize,
}

fn parse() -> Result<Args, String> {
    const USAGE: &str =
        "usage: gemm_peer [--sizes 256,1024,...] [--shapes] [--threads T] [--reps N]";
    let mut a = Args {
        sizes: vec![256, 1024, 2048],
        shapes: false,
        threads: 1,
        reps: 7,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> Result<usize, String> {
        let v = v.ok_or(format!("{what} needs a value ({USAGE})"))?;
        v.trim().parse().map_err(|e| format!("{what} {v}: {e}"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sizes" => {
                let v = it
                    .next()
                    .ok_or(format!("--sizes needs a value ({USAGE})"))?;
                a.sizes = v
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| num(Some(s.into()), "--sizes"))
                    .collect::<Result<_, _>>()?;
            }
            "--shapes" => a.shapes = true,
            "--threads" => a.threads = num(it.next(), "--threads")?.max(1),
            "--reps" => a.reps = num(it.next(), "--reps")?.max(1),
            _ => return Err(format!("unexpected argument {arg} ({USAGE})")),
        }
    }
    Ok(a)
}

/// Uniform numbers in [-1, 1) from a 64-bit LCG (Knuth's MMIX constants).
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Product {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Product {
    /// `c ← op(a)·op(b)`, all row-major (`c` is `m×n`).
    fn run(&self, c: &mut [f32], par: Parallelism) {
        let (m, k, n) = (self.m, self.k, self.n);
        assert!(self.a.len() == m * k && self.b.len() == k * n && c.len() == m * n);
        // strides of op(A) (m×k) and op(B) (k×n) as (column, row) stride
        let (a_cs, a_rs) = if self.ta { (m, 1) } else { (1, k) };
        let (b_cs, b_rs) = if self.tb { (k, 1) } else { (1, n) };
        // SAFETY: the assert above sizes each buffer for its strides: every
        // index i·rs + j·cs reached (i < rows, j < cols) is below the length;
        // `c` is borrowed mutably and does not alias `a` or `b`; with
        // `read_dst` false, `c`'s old contents are not read.
        unsafe {
            gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                self.a.as_ptr(),
                a_cs as isize,
                a_rs as isize,
                self.b.as_ptr(),
                b_cs as isize,
                b_rs as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
    }

    /// `c` checked at 64 sampled entries against f64 dot products (the
    /// tolerance of bench_matmul).
    fn check(&self, c: &[f32]) -> Result<(), String> {
        let (m, k, n) = (self.m, self.k, self.n);
        for s in 0..64 {
            let (i, j) = ((s * 7919) % m, (s * 104_729) % n);
            let want: f64 = (0..k)
                .map(|p| {
                    let x = if self.ta {
                        self.a[p * m + i]
                    } else {
                        self.a[i * k + p]
                    };
                    let y = if self.tb {
                        self.b[j * k + p]
                    } else {
                        self.b[p * n + j]
                    };
                    x as f64 * y as f64
                })
                .sum();
            let got = c[i * n + j] as f64;
            if (got - want).abs() > 1e-4 * (k as f64).sqrt() * (1.0 + want.abs()) {
                return Err(format!("C[{i}, {j}] = {got}, want {want} ({m}x{k}x{n})"));
            }
        }
        Ok(())
    }
}

/// Median and best GFLOP/s over `reps` repetitions of about 50 ms each.
fn measure(p: &Product, reps: usize, par: Parallelism) -> Result<(f64, f64), String> {
    let mut c = vec![f32::NAN; p.m * p.n];
    p.run(&mut c, par);
    p.check(&c)?;
    let flop = 2.0 * (p.m * p.n * p.k) as f64;
    // products per repetition: about 50 ms of work at 100 GFLOP/s
    let inner = ((5e9 / flop) as usize).clamp(1, 100_000);
    let mut rates = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..inner {
            p.run(std::hint::black_box(&mut c), par);
        }
        rates.push(flop * inner as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok((rates[rates.len() / 2], rates[rates.len() - 1]))
}

fn kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "portable"
}

fn run(args: &Args) -> Result<(), String> {
    let par = if args.threads == 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(args.threads)
    };
    let mut cases: Vec<(String, usize, usize, usize, bool, bool)> = args
        .sizes
        .iter()
        .map(|&n| (format!("n={n}"), n, n, n, false, false))
        .collect();
    if args.shapes {
        cases.extend(
            PEER_SHAPES
                .iter()
                .map(|&(l, m, k, n, ta, tb)| (l.to_string(), m, k, n, ta, tb)),
        );
    }
    for (label, m, k, n, ta, tb) in cases {
        let p = Product {
            m,
            k,
            n,
            ta,
            tb,
            a: random(m * k, 1),
            b: random(k * n, 2),
        };
        let (median, best) = measure(&p, args.reps, par)?;
        println!(
            "gemm sgemm {label} {median:.1} GFLOP/s (best {best:.1}, threads={}, {})",
            args.threads,
            kernel()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gemm_peer: {e}");
            ExitCode::FAILURE
        }
    }
}
