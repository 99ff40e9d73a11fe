//! This machine's peak f32 FMA throughput, on one thread and on all of
//! rime's threads (rayon's pool, `RAYON_NUM_THREADS`): the ceiling sgemm is
//! measured against.
//!
//! ```text
//! cargo run --release --example bench_fma
//! fma peak threads=1 <x> GFLOP/s (avx512, best <y>)
//! fma peak threads=2 <x> GFLOP/s (avx512, best <y>)
//! ```
//!
//! Each thread runs independent chains of vector fused multiply-adds (16
//! registers of AVX-512, 12 of AVX2, or 8 scalar chains elsewhere), enough to
//! hide the FMA latency; one FMA is 2 FLOP. `<x>` is the median of 7 runs,
//! `<y>` the best. `--quick` makes the runs short (for CI). The example
//! exits non-zero if a kernel's result is not the value it must compute.

use std::process::ExitCode;
use std::time::Instant;

/// A throughput kernel: runs `iters` rounds, returns the sum of its
/// accumulators (to check and to keep the work alive).
struct Kernel {
    name: &'static str,
    /// FLOP per round.
    flop: f64,
    run: fn(u64) -> f32,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: u64) -> f32 {
        // opaque operands, so the compiler cannot fold the chains
        let (a, b) = (
            _mm512_set1_ps(black_box(0.5)),
            _mm512_set1_ps(black_box(0.5)),
        );
        let mut acc = [_mm512_set1_ps(black_box(1.0)); 16];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm512_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for r in acc {
            s = _mm512_add_ps(s, r);
        }
        _mm512_reduce_add_ps(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: u64) -> f32 {
        let (a, b) = (
            _mm256_set1_ps(black_box(0.5)),
            _mm256_set1_ps(black_box(0.5)),
        );
        let mut acc = [_mm256_set1_ps(black_box(1.0)); 12];
        for _ in 0..iters {
            for r in acc.iter_mut() {
                *r = _mm256_fmadd_ps(*r, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for r in acc {
            s = _mm256_add_ps(s, r);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum()
    }

    pub fn run_avx512(iters: u64) -> f32 {
        // SAFETY: only listed when the CPU has AVX-512F (see `kernels`).
        unsafe { avx512(iters) }
    }

    pub fn run_avx2(iters: u64) -> f32 {
        // SAFETY: only listed when the CPU has AVX2 and FMA (see `kernels`).
        unsafe { avx2(iters) }
    }
}

fn scalar(iters: u64) -> f32 {
    let (a, b) = (std::hint::black_box(0.5f32), std::hint::black_box(0.5f32));
    let mut acc = [std::hint::black_box(1.0f32); 8];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = r.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

/// The kernels this CPU can run, widest first.
fn kernels() -> Vec<Kernel> {
    let mut k = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            k.push(Kernel {
                name: "avx512",
                flop: 16.0 * 16.0 * 2.0,
                run: x86::run_avx512,
            });
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            k.push(Kernel {
                name: "avx2",
                flop: 12.0 * 8.0 * 2.0,
                run: x86::run_avx2,
            });
        }
    }
    k.push(Kernel {
        name: "scalar",
        flop: 8.0 * 2.0,
        run: scalar,
    });
    k
}

/// GFLOP/s of `threads` threads each running `iters` rounds of `k`.
fn rate(k: &Kernel, threads: usize, iters: u64) -> Result<f64, String> {
    let t = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(move || (k.run)(std::hint::black_box(iters))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("kernel thread"))
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    // x -> 0.5 x + 0.5 from 1.0 stays 1.0: every lane sums to exactly 1
    let lanes = (k.flop / 2.0) as f32;
    if let Some(bad) = sums.iter().find(|&&s| s != lanes) {
        return Err(format!(
            "{} kernel computed {bad}, expected {lanes}",
            k.name
        ));
    }
    Ok(threads as f64 * iters as f64 * k.flop / secs / 1e9)
}

/// `--quick`: fewer and shorter runs.
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

fn main() -> ExitCode {
    let quick = match parse_quick() {
        Ok(quick) => quick,
        Err(e) => {
            eprintln!("bench_fma: {e} (usage: bench_fma [--quick])");
            return ExitCode::FAILURE;
        }
    };
    let all = rime::tensor::num_threads();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    let (runs, seconds) = if quick { (3, 0.01) } else { (7, 0.3) };
    let ks = kernels();
    for &threads in &counts {
        // the widest kernel is not always the fastest (AVX-512 may run at
        // half width): report the best kernel
        let mut best: Option<(&Kernel, f64, f64)> = None;
        for k in &ks {
            // calibrate the round count to the wanted duration
            let probe = 200_000u64;
            let r = match rate(k, 1, probe) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bench_fma: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let iters = ((r * 1e9 * seconds / k.flop) as u64).max(1000);
            let mut rates = Vec::with_capacity(runs);
            for _ in 0..runs {
                match rate(k, threads, iters) {
                    Ok(r) => rates.push(r),
                    Err(e) => {
                        eprintln!("bench_fma: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            rates.sort_by(f64::total_cmp);
            let (median, top) = (rates[runs / 2], rates[runs - 1]);
            if best.is_none_or(|(_, m, _)| median > m) {
                best = Some((k, median, top));
            }
        }
        let (k, median, top) = best.expect("the scalar kernel always runs");
        println!(
            "fma peak threads={threads} {median:.1} GFLOP/s ({}, best {top:.1})",
            k.name
        );
    }
    ExitCode::SUCCESS
}
