//! A BLIS-style blocked matrix product with own AVX2+FMA microkernels.
//!
//! `C = A·B` (or `C += A·B`) is computed in blocks that fit the caches: a
//! `KC×NC` block of B is packed into micro-panels of `NR` columns (it stays
//! in L3, one micro-panel in L1), an `MC×KC` block of A into micro-panels of
//! `MR` rows (it stays in L2), and a register-blocked microkernel multiplies
//! one A micro-panel by one B micro-panel into an `MR×NR` tile of C held in
//! 12 vector registers. Packing reads each operand through its strides, so
//! every transposition variant costs the same in the kernel. Edge tiles are
//! computed into a local tile (zero-padded panels) and the valid part copied.
//!
//! Each element of C is a chain of fused multiply-adds over `p` in order,
//! restarted per `KC` block and the blocks summed in order: its value
//! depends on `k` only, not on where the element lies in a tile or which
//! rows or columns a caller splits off, so split products equal whole ones.
//!
//! Sizes (Zen 3: 32 KB L1d, 512 KB L2 per core): f32 6×16 tiles, `KC` 256
//! (a B micro-panel is 16 KB), `MC` 144 (an A block is 144 KB), `NC` 4080.
//! Without AVX2+FMA [`gemm`] returns `false` and the caller uses
//! matrixmultiply (as on other architectures, where this module is not
//! compiled).

use std::cell::RefCell;

use crate::Element;

/// Evaluates `$call` with the type `$U` standing for `$T` when `$T` is `f32`
/// or `f64` (the types with microkernels); `false` for other element types
/// (integers have no products).
macro_rules! by_float_type {
    ($T:ty, $U:ident => $call:expr) => {
        match <$T as crate::Scalar>::DTYPE {
            crate::DType::F32 => {
                type $U = f32;
                $call
            }
            crate::DType::F64 => {
                type $U = f64;
                $call
            }
            _ => false,
        }
    };
}

/// A microkernel and its block sizes, for one element type.
trait Micro: Element {
    /// Rows of a C tile (and of an A micro-panel).
    const MR: usize;
    /// Columns of a C tile (and of a B micro-panel).
    const NR: usize;
    /// Rows of an A block (a multiple of `MR`).
    const MC: usize;
    /// Depth of a block.
    const KC: usize;
    /// Columns of a B block (a multiple of `NR`).
    const NC: usize;

    /// `tile = a·b` (`acc == false`) or `tile += a·b` over `kc` steps.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `a` holds `kc·MR` and `b` `kc·NR`
    /// readable elements (packed panels); `c` points to `MR` rows of stride
    /// `ldc` with `NR` writable elements each (initialized if `acc`), not
    /// aliasing `a` or `b`.
    unsafe fn kernel(
        kc: usize,
        a: *const Self,
        b: *const Self,
        c: *mut Self,
        ldc: usize,
        acc: bool,
    );
}

/// A cache line of packing buffer: the buffers are vectors of these, so
/// every panel starts 64-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A thread's packing buffers, kept between calls (no allocation per
/// product once they have grown to the block sizes).
#[derive(Default)]
struct PackBufs {
    a: Vec<Line>,
    b: Vec<Line>,
    /// A whole packed B shared by the tasks of a split product.
    shared_b: Vec<Line>,
}

thread_local! {
    static BUFS: RefCell<PackBufs> = RefCell::new(PackBufs::default());
}

/// A buffer of at least `elems` elements of `T` (grown, never shrunk).
fn reserve<T>(buf: &mut Vec<Line>, elems: usize) -> *mut T {
    let lines = (elems * size_of::<T>()).div_ceil(64);
    if buf.len() < lines {
        buf.resize(lines, Line([0; 64]));
    }
    buf.as_mut_ptr().cast()
}

/// Whether this CPU runs the own kernels (AVX2 and FMA).
#[inline]
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// `C = A·B` (`acc == false`) or `C += A·B` (`acc == true`) with the own
/// kernels, for `f32` and `f64`. Returns `false` (having done nothing) when
/// they do not apply: another CPU, or another element type.
///
/// # Safety
/// Element `(i, p)` of A is at `a + i·rsa + p·csa` and readable for `i < m`,
/// `p < k`; likewise B (`k×n`); C holds `m` rows of stride `ldc` with `n`
/// writable elements each (initialized if `acc`), and aliases neither A nor
/// B nor is written by anyone else during the call. All these offsets fit
/// in `isize`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    rsb: usize,
    csb: usize,
    c: *mut T,
    ldc: usize,
    acc: bool,
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `U` is `T` (selected through its dtype), so the casts are
    // identities; the caller's contract passes through unchanged, and the
    // CPU has AVX2+FMA (checked above).
    by_float_type!(T, U => unsafe {
        blocked::<U>(m, k, n, a.cast(), rsa, csa, b.cast(), rsb, csb, c.cast(), ldc, acc);
        true
    })
}

/// The blocked loops (BLIS order: columns of C by `NC`, depth by `KC`
/// packing B, rows by `MC` packing A, then micro-panels).
///
/// # Safety
/// As [`gemm`], and the CPU has AVX2+FMA.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked<T: Micro>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    rsb: usize,
    csb: usize,
    c: *mut T,
    ldc: usize,
    acc: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside C (the contract).
                    unsafe { c.add(i * ldc + j).write(T::zero()) };
                }
            }
        }
        return;
    }
    let mut fresh = PackBufs::default();
    BUFS.with(|bufs| {
        // a nested call on this thread (none today) would get fresh buffers
        let mut held = bufs.try_borrow_mut();
        let bufs = match held.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut fresh,
        };
        let kc_max = T::KC.min(k);
        let pa = reserve::<T>(&mut bufs.a, T::MC.min(m).next_multiple_of(T::MR) * kc_max);
        let pb = reserve::<T>(&mut bufs.b, T::NC.min(n).next_multiple_of(T::NR) * kc_max);
        for jc in (0..n).step_by(T::NC) {
            let nc = T::NC.min(n - jc);
            for pc in (0..k).step_by(T::KC) {
                let kc = T::KC.min(k - pc);
                // SAFETY: the block (pc.., jc..) of B lies inside B, and pb
                // holds nc rounded up to NR times kc elements (reserved above).
                unsafe { pack_b(kc, nc, b.add(pc * rsb + jc * csb), rsb, csb, pb) };
                let acc = acc || pc > 0;
                for ic in (0..m).step_by(T::MC) {
                    let mc = T::MC.min(m - ic);
                    // SAFETY: as for B: the block (ic.., pc..) lies inside A,
                    // pa holds mc rounded up to MR times kc elements; the C
                    // block (ic.., jc..) lies inside C.
                    unsafe {
                        pack_a(mc, kc, a.add(ic * rsa + pc * csa), rsa, csa, pa);
                        macro_kernel(mc, nc, kc, pa, pb, c.add(ic * ldc + jc), ldc, acc);
                    }
                }
            }
        }
    });
}

/// Packs the `mc×kc` block of A at `a` into micro-panels of `MR` rows:
/// panel `q` holds `dst[q·MR·kc + p·MR + r] = A[q·MR + r, p]`, rows past
/// `mc` zero.
///
/// # Safety
/// The block lies inside A; `dst` holds `mc.next_multiple_of(MR)·kc`
/// writable elements.
unsafe fn pack_a<T: Micro>(mc: usize, kc: usize, a: *const T, rsa: usize, csa: usize, dst: *mut T) {
    let mr = T::MR;
    for (q, i0) in (0..mc).step_by(mr).enumerate() {
        let rows = mr.min(mc - i0);
        // SAFETY: panel q starts at q·MR·kc, inside dst.
        let panel = unsafe { dst.add(q * mr * kc) };
        // SAFETY (the loops): reads are of rows i0 + r < mc and columns
        // p < kc of the block; writes are at p·MR + r < MR·kc in the panel.
        if csa == 1 && rows == mr {
            // rows contiguous: MR streams read along p, the panel written
            // in order
            let src: [*const T; 8] =
                std::array::from_fn(|r| unsafe { a.add((i0 + r.min(mr - 1)) * rsa) });
            for p in 0..kc {
                for (r, s) in src.iter().enumerate().take(mr) {
                    unsafe { *panel.add(p * mr + r) = *s.add(p) };
                }
            }
        } else if csa == 1 {
            // rows contiguous: read along each row
            for r in 0..rows {
                let src = unsafe { a.add((i0 + r) * rsa) };
                for p in 0..kc {
                    unsafe { *panel.add(p * mr + r) = *src.add(p) };
                }
            }
        } else {
            for p in 0..kc {
                let src = unsafe { a.add(i0 * rsa + p * csa) };
                for r in 0..rows {
                    unsafe { *panel.add(p * mr + r) = *src.add(r * rsa) };
                }
            }
        }
        for p in 0..kc {
            for r in rows..mr {
                unsafe { *panel.add(p * mr + r) = T::zero() };
            }
        }
    }
}

/// Packs the `kc×nc` block of B at `b` into micro-panels of `NR` columns:
/// panel `q` holds `dst[q·NR·kc + p·NR + j] = B[p, q·NR + j]`, columns past
/// `nc` zero.
///
/// # Safety
/// The block lies inside B; `dst` holds `nc.next_multiple_of(NR)·kc`
/// writable elements.
unsafe fn pack_b<T: Micro>(kc: usize, nc: usize, b: *const T, rsb: usize, csb: usize, dst: *mut T) {
    let nr = T::NR;
    for (q, j0) in (0..nc).step_by(nr).enumerate() {
        let cols = nr.min(nc - j0);
        // SAFETY: panel q starts at q·NR·kc, inside dst.
        let panel = unsafe { dst.add(q * nr * kc) };
        // SAFETY (the loops): reads are of rows p < kc and columns
        // j0 + j < nc of the block; writes at p·NR + j < NR·kc in the panel.
        if csb == 1 && cols == nr {
            for p in 0..kc {
                unsafe {
                    std::ptr::copy_nonoverlapping(b.add(p * rsb + j0), panel.add(p * nr), nr)
                };
            }
            continue;
        }
        if csb == 1 {
            for p in 0..kc {
                let src = unsafe { b.add(p * rsb + j0) };
                for j in 0..cols {
                    unsafe { *panel.add(p * nr + j) = *src.add(j) };
                }
            }
        } else {
            // columns contiguous (B read transposed): read along each
            // column, a cache line at a time (16 steps of p) before the next
            // column — the columns of a power-of-two-sized B map to the same
            // L1 set, and reading each whole column in turn thrashed it
            for p0 in (0..kc).step_by(16) {
                let steps = 16.min(kc - p0);
                for j in 0..cols {
                    let src = unsafe { b.add((j0 + j) * csb + p0 * rsb) };
                    for p in 0..steps {
                        unsafe { *panel.add((p0 + p) * nr + j) = *src.add(p * rsb) };
                    }
                }
            }
        }
        for p in 0..kc {
            for j in cols..nr {
                unsafe { *panel.add(p * nr + j) = T::zero() };
            }
        }
    }
}

/// All tiles of an `mc×nc` block of C from packed A and B.
///
/// # Safety
/// `pa` and `pb` hold the packed blocks (see [`pack_a`], [`pack_b`]); `c`
/// points to `mc` rows of stride `ldc` with `nc` writable elements each
/// (initialized if `acc`); the CPU has AVX2+FMA.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel<T: Micro>(
    mc: usize,
    nc: usize,
    kc: usize,
    pa: *const T,
    pb: *const T,
    c: *mut T,
    ldc: usize,
    acc: bool,
) {
    let (mr_full, nr_full) = (T::MR, T::NR);
    for jr in (0..nc).step_by(nr_full) {
        let nr = nr_full.min(nc - jr);
        // SAFETY: micro-panel jr / NR of B starts at jr·kc.
        let bp = unsafe { pb.add(jr * kc) };
        for ir in (0..mc).step_by(mr_full) {
            let mr = mr_full.min(mc - ir);
            // SAFETY: micro-panel ir / MR of A starts at ir·kc; the tile at
            // (ir, jr) lies inside the C block.
            let (ap, ct) = unsafe { (pa.add(ir * kc), c.add(ir * ldc + jr)) };
            if mr == mr_full && nr == nr_full {
                // SAFETY: a whole tile of C; panels as the contract says.
                unsafe { T::kernel(kc, ap, bp, ct, ldc, acc) };
            } else {
                // an edge tile: computed whole into a local tile (the
                // panels are zero-padded), its valid part copied out
                let mut tile = [T::zero(); 128];
                debug_assert!(mr_full * nr_full <= tile.len());
                // SAFETY: `tile` holds MR rows of NR elements.
                unsafe { T::kernel(kc, ap, bp, tile.as_mut_ptr(), nr_full, false) };
                for r in 0..mr {
                    for j in 0..nr {
                        let v = tile[r * nr_full + j];
                        // SAFETY: r < mr and j < nr: inside the C block.
                        unsafe {
                            let d = ct.add(r * ldc + j);
                            *d = if acc { *d + v } else { v };
                        }
                    }
                }
            }
        }
    }
}

mod x86 {
    use std::arch::x86_64::*;

    use super::Micro;

    /// One step of a 6-row microkernel: two B vectors, six broadcast A
    /// elements, twelve FMAs.
    macro_rules! step {
        ($load:ident, $bcast:ident, $fma:ident, $w:expr, $a:ident, $b:ident, $c:ident) => {{
            let b0 = $load($b);
            let b1 = $load($b.add($w));
            let a0 = $bcast(&*$a);
            $c[0] = $fma(a0, b0, $c[0]);
            $c[1] = $fma(a0, b1, $c[1]);
            let a1 = $bcast(&*$a.add(1));
            $c[2] = $fma(a1, b0, $c[2]);
            $c[3] = $fma(a1, b1, $c[3]);
            let a2 = $bcast(&*$a.add(2));
            $c[4] = $fma(a2, b0, $c[4]);
            $c[5] = $fma(a2, b1, $c[5]);
            let a3 = $bcast(&*$a.add(3));
            $c[6] = $fma(a3, b0, $c[6]);
            $c[7] = $fma(a3, b1, $c[7]);
            let a4 = $bcast(&*$a.add(4));
            $c[8] = $fma(a4, b0, $c[8]);
            $c[9] = $fma(a4, b1, $c[9]);
            let a5 = $bcast(&*$a.add(5));
            $c[10] = $fma(a5, b0, $c[10]);
            $c[11] = $fma(a5, b1, $c[11]);
            $a = $a.add(6);
            $b = $b.add(2 * $w);
        }};
    }

    /// The 6×(2 vectors) microkernel body for one element type.
    macro_rules! kernel_body {
        ($kc:ident, $a:ident, $b:ident, $c:ident, $ldc:ident, $acc:ident,
         $zero:ident, $load:ident, $loadu:ident, $storeu:ident, $add:ident,
         $bcast:ident, $fma:ident, $w:expr) => {{
            // C's rows are fetched while the products run
            for r in 0..6 {
                let row = $c.wrapping_add(r * $ldc).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(row);
                // a tile row is 64 bytes (16 f32 or 8 f64), maybe across two lines
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(63));
            }
            let mut a = $a;
            let mut b = $b;
            let mut regs = [$zero(); 12];
            // SAFETY (the loop): each step reads 6 elements of a and 2·w of
            // b, kc steps in all: inside the panels (the contract).
            for _ in 0..$kc / 4 {
                unsafe {
                    step!($load, $bcast, $fma, $w, a, b, regs);
                    step!($load, $bcast, $fma, $w, a, b, regs);
                    step!($load, $bcast, $fma, $w, a, b, regs);
                    step!($load, $bcast, $fma, $w, a, b, regs);
                }
            }
            for _ in 0..$kc % 4 {
                unsafe { step!($load, $bcast, $fma, $w, a, b, regs) };
            }
            for r in 0..6 {
                // SAFETY: row r < MR of the tile, 2·w = NR elements.
                unsafe {
                    let row = $c.add(r * $ldc);
                    let (mut v0, mut v1) = (regs[2 * r], regs[2 * r + 1]);
                    if $acc {
                        v0 = $add(v0, $loadu(row));
                        v1 = $add(v1, $loadu(row.add($w)));
                    }
                    $storeu(row, v0);
                    $storeu(row.add($w), v1);
                }
            }
        }};
    }

    /// # Safety
    /// As [`Micro::kernel`] for f32 (MR 6, NR 16).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_f32(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        kernel_body!(
            kc,
            a,
            b,
            c,
            ldc,
            acc,
            _mm256_setzero_ps,
            _mm256_load_ps,
            _mm256_loadu_ps,
            _mm256_storeu_ps,
            _mm256_add_ps,
            _mm256_broadcast_ss,
            _mm256_fmadd_ps,
            8
        )
    }

    /// # Safety
    /// As [`Micro::kernel`] for f64 (MR 6, NR 8).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_f64(
        kc: usize,
        a: *const f64,
        b: *const f64,
        c: *mut f64,
        ldc: usize,
        acc: bool,
    ) {
        kernel_body!(
            kc,
            a,
            b,
            c,
            ldc,
            acc,
            _mm256_setzero_pd,
            _mm256_load_pd,
            _mm256_loadu_pd,
            _mm256_storeu_pd,
            _mm256_add_pd,
            _mm256_broadcast_sd,
            _mm256_fmadd_pd,
            4
        )
    }

    impl Micro for f32 {
        const MR: usize = 6;
        const NR: usize = 16;
        const MC: usize = 144;
        const KC: usize = 256;
        const NC: usize = 4080;
        #[inline(always)]
        unsafe fn kernel(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            acc: bool,
        ) {
            // SAFETY: the trait's contract.
            unsafe { kernel_f32(kc, a, b, c, ldc, acc) }
        }
    }

    impl Micro for f64 {
        const MR: usize = 6;
        const NR: usize = 8;
        const MC: usize = 72;
        const KC: usize = 256;
        const NC: usize = 4080;
        #[inline(always)]
        unsafe fn kernel(
            kc: usize,
            a: *const f64,
            b: *const f64,
            c: *mut f64,
            ldc: usize,
            acc: bool,
        ) {
            // SAFETY: the trait's contract.
            unsafe { kernel_f64(kc, a, b, c, ldc, acc) }
        }
    }
}

/// `C = A·B` split across the pool ([`super::par_tasks`]): B is packed once
/// into a shared buffer (in parallel when large), then tasks — about four
/// per thread, each a block of C's rows (and of its columns when there are
/// too few rows) — pack their own rows of A and run the microkernels.
/// More tasks than threads let a thread that is slow to start (its core
/// busy) leave its share to the others. Returns `false` (having done
/// nothing) on another CPU or element type, or when the packed copy of B
/// cannot be allocated.
///
/// # Safety
/// As [`gemm`] with `acc == false`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_par<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    rsb: usize,
    csb: usize,
    c: *mut T,
    ldc: usize,
) -> bool {
    if !available() || m == 0 || n == 0 || k == 0 {
        return false;
    }
    // SAFETY: as in `gemm`.
    by_float_type!(T, U => unsafe {
        blocked_par::<U>(m, k, n, a.cast(), rsa, csa, b.cast(), rsb, csb, c.cast(), ldc)
    })
}

/// A pointer shared by the tasks of one product (they read or write
/// disjoint parts of what it points to).
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: used only to hand disjoint blocks of one buffer to tasks of one
// `par_tasks` call, which all end before the buffer does.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for Shared<T> {}

/// The body of [`gemm_par`].
///
/// # Safety
/// As [`gemm`] with `acc == false`; `m`, `n`, `k` > 0; the CPU has AVX2+FMA.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked_par<T: Micro>(
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    rsa: usize,
    csa: usize,
    b: *const T,
    rsb: usize,
    csb: usize,
    c: *mut T,
    ldc: usize,
) -> bool {
    // B packed whole: depth block `pc` at pc·npad, panels of NR columns
    let npad = n.next_multiple_of(T::NR);
    let Some(lines) = k
        .checked_mul(npad)
        .and_then(|e| e.checked_mul(size_of::<T>()))
        .map(|bytes| bytes.div_ceil(64))
    else {
        return false;
    };
    // the calling thread's buffer from earlier products (a fresh one would
    // be page-faulted in on every call)
    let mut packed = BUFS.with(|b| {
        b.try_borrow_mut()
            .map(|mut b| std::mem::take(&mut b.shared_b))
            .unwrap_or_default()
    });
    packed.clear();
    if packed.try_reserve_exact(lines).is_err() {
        return false;
    }
    // written by pack_b before any read (every element, padding included)
    let pb = Shared(packed.as_mut_ptr().cast::<T>());
    let (ap, bp, cp) = (Shared(a.cast_mut()), Shared(b.cast_mut()), Shared(c));
    const PANELS_PER_TASK: usize = 8;
    let groups = (npad / T::NR).div_ceil(PANELS_PER_TASK);
    let pack_tasks = k.div_ceil(T::KC) * groups;
    let pack = |t: usize| {
        let (pc, j0) = ((t / groups) * T::KC, (t % groups) * PANELS_PER_TASK * T::NR);
        let (kc, nc) = (T::KC.min(k - pc), (PANELS_PER_TASK * T::NR).min(n - j0));
        let (b, pb) = (bp, pb);
        // SAFETY: the block (pc.., j0..) lies inside B; its packed panels
        // are the kc·nc.next_multiple_of(NR) elements at pc·npad + j0·kc,
        // inside the buffer and disjoint from other tasks'.
        unsafe {
            pack_b(
                kc,
                nc,
                b.0.add(pc * rsb + j0 * csb),
                rsb,
                csb,
                pb.0.add(pc * npad + j0 * kc),
            )
        };
    };
    if k * n >= 1 << 16 {
        super::par_tasks(pack_tasks, pack);
    } else {
        (0..pack_tasks).for_each(pack);
    }

    // tasks: about 4 per thread, none below ~0.5M multiply-adds; row blocks
    // first (no operand packed twice), then column blocks
    let want = (4 * super::threads()).min(((m * n * k) >> 19).max(1));
    let row_tasks = want.min(m.div_ceil(T::MR));
    let rows_per = m.div_ceil(row_tasks).next_multiple_of(T::MR);
    let row_tasks = m.div_ceil(rows_per);
    let col_tasks = want.div_ceil(row_tasks).min(n.div_ceil(T::NR));
    let cols_per = n.div_ceil(col_tasks).next_multiple_of(T::NR);
    let col_tasks = n.div_ceil(cols_per);
    super::par_tasks(row_tasks * col_tasks, |t| {
        let (i0, j0) = ((t / col_tasks) * rows_per, (t % col_tasks) * cols_per);
        let (rows, cols) = (rows_per.min(m - i0), cols_per.min(n - j0));
        let (a, pb, c) = (ap, pb, cp);
        BUFS.with(|bufs| {
            let mut fresh = PackBufs::default();
            let mut held = bufs.try_borrow_mut();
            let bufs = match held.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            let pa = reserve::<T>(
                &mut bufs.a,
                T::MC.min(rows).next_multiple_of(T::MR) * T::KC.min(k),
            );
            for pc in (0..k).step_by(T::KC) {
                let kc = T::KC.min(k - pc);
                for ic in (0..rows).step_by(T::MC) {
                    let mc = T::MC.min(rows - ic);
                    // SAFETY: the A block (i0 + ic.., pc..) lies inside A and
                    // pa holds its packed panels; B's packed block for
                    // (pc, j0..) was written above; the C block (i0 + ic..,
                    // j0..) lies inside C and no other task writes it.
                    unsafe {
                        pack_a(mc, kc, a.0.add((i0 + ic) * rsa + pc * csa), rsa, csa, pa);
                        macro_kernel(
                            mc,
                            cols,
                            kc,
                            pa,
                            pb.0.add(pc * npad + j0 * kc),
                            c.0.add((i0 + ic) * ldc + j0),
                            ldc,
                            pc > 0,
                        );
                    }
                }
            }
        });
    });
    // kept for the next product unless it is very large (64 MiB)
    if lines <= 1 << 20 {
        BUFS.with(|b| {
            if let Ok(mut b) = b.try_borrow_mut() {
                b.shared_b = packed;
            }
        });
    }
    true
}
