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

use super::gemm::Epilogue;
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

    /// Packs one whole A micro-panel from `MR` rows stored contiguously
    /// (`csa == 1`, the layout of activations): `dst[p·MR + r] = a[r·rsa +
    /// p]`, transposing 8×8 (f32) or 4×4 (f64) blocks in registers rather
    /// than moving one element at a time.
    ///
    /// # Safety
    /// The CPU supports AVX2; rows `r < MR` at `a + r·rsa` hold `kc`
    /// readable elements; `dst` holds `MR·kc` writable elements.
    unsafe fn pack_a_rows(kc: usize, a: *const Self, rsa: usize, dst: *mut Self);

    /// Packs one whole B micro-panel from `NR` columns stored contiguously
    /// (`rsb == 1`, a transposed weight): `dst[p·NR + j] = b[j·csb + p]`,
    /// by register transposes as [`Micro::pack_a_rows`].
    ///
    /// # Safety
    /// The CPU supports AVX2; columns `j < NR` at `b + j·csb` hold `kc`
    /// readable elements; `dst` holds `NR·kc` writable elements.
    unsafe fn pack_b_cols(kc: usize, b: *const Self, csb: usize, dst: *mut Self);
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
    /// A whole packed operand shared by the tasks of a split product.
    shared: Vec<Line>,
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
/// kernels, for `f32` and `f64`, handing each finished row segment of C to
/// `epilogue` (see [`Epilogue`]). Returns `false` (having done nothing) when
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
    epilogue: Option<Epilogue<'_, T>>,
) -> bool {
    if !available() {
        return false;
    }
    // SAFETY: `U` is `T` (selected through its dtype), so the casts are
    // identities (an epilogue over `T` is one over `U`); the caller's
    // contract passes through unchanged, and the CPU has AVX2+FMA (checked
    // above).
    by_float_type!(T, U => unsafe {
        let epilogue: Option<Epilogue<'_, U>> = std::mem::transmute(epilogue);
        let (a, b) = (a.cast(), b.cast());
        blocked::<U>(m, k, n, a, rsa, csa, b, rsb, csb, c.cast(), ldc, acc, epilogue);
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
    epilogue: Option<Epilogue<'_, T>>,
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
        if let Some(epilogue) = epilogue {
            // SAFETY: all of C, final, exclusively the caller's.
            unsafe { run_epilogue(epilogue, 0, m, 0, n, c, ldc) };
        }
        return;
    }
    // SAFETY: the caller's contract.
    if !acc && unsafe { narrow::<T>(m, k, n, a, rsa, csa, b, rsb, csb, c, ldc, epilogue) } {
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
                let last = pc + kc == k;
                for ic in (0..m).step_by(T::MC) {
                    let mc = T::MC.min(m - ic);
                    // SAFETY: as for B: the block (ic.., pc..) lies inside A,
                    // pa holds mc rounded up to MR times kc elements; the C
                    // block (ic.., jc..) lies inside C, final after the last
                    // depth block.
                    unsafe {
                        pack_a(mc, kc, a.add(ic * rsa + pc * csa), rsa, csa, pa);
                        let cb = c.add(ic * ldc + jc);
                        macro_kernel(mc, nc, kc, pa, pb, cb, ldc, acc);
                        if last && let Some(epilogue) = epilogue {
                            run_epilogue(epilogue, ic, mc, jc, nc, cb, ldc);
                        }
                    }
                }
            }
        }
    });
}

/// `C = A·B` for a C narrower than a micro-panel, computed as its
/// transpose `Cᵀ = Bᵀ·Aᵀ` into a buffer and copied back; `false` (having
/// done nothing) when that does not pay or the buffer cannot be had.
///
/// The bench MLP's output layer has 10 columns: the `MR×NR` (6×16) tiles
/// compute 16 of which 6 are padding, where the transpose's tiles cover
/// its 10 rows with 12 (`bench_matmul --shapes`: 128×256·256×10 ran at
/// 0.66–0.70 of the `gemm` crate's speed). Each element of the transpose
/// is the same chain of fused multiply-adds over the same depth blocks
/// (`fma(a, b, c) = fma(b, a, c)`), so C gets the same bits either way.
///
/// # Safety
/// As [`gemm`], and the CPU has AVX2+FMA.
#[allow(clippy::too_many_arguments)]
unsafe fn narrow<T: Micro>(
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
    epilogue: Option<Epilogue<'_, T>>,
) -> bool {
    // worth it when the transpose's row panels waste less than C's column
    // panel (f32: n ≤ 12), and C is tall enough to fill the transpose's
    // column panels
    if n.next_multiple_of(T::MR) >= T::NR || m < 2 * T::NR {
        return false;
    }
    let mut t: Vec<T> = Vec::new();
    if t.try_reserve_exact(m * n).is_err() {
        return false;
    }
    // SAFETY: Bᵀ (n×k) and Aᵀ (k×m) are B and A read with their strides
    // swapped, inside them (the contract); `t` holds m·n writable elements
    // (n rows of stride m), written by the product before `set_len`; the
    // nested call takes the other branch (its C is m ≥ 2·NR wide).
    unsafe {
        blocked::<T>(
            n,
            k,
            m,
            b,
            csb,
            rsb,
            a,
            csa,
            rsa,
            t.as_mut_ptr(),
            m,
            false,
            None,
        );
        t.set_len(m * n);
    }
    for i in 0..m {
        for j in 0..n {
            // SAFETY: (i, j) is inside C (the contract).
            unsafe { c.add(i * ldc + j).write(t[j * m + i]) };
        }
    }
    if let Some(epilogue) = epilogue {
        // SAFETY: all of C, final, exclusively the caller's.
        unsafe { run_epilogue(epilogue, 0, m, 0, n, c, ldc) };
    }
    true
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
            // SAFETY: MR whole rows of kc elements at stride rsa inside the
            // block; the panel holds MR·kc elements; AVX2 (this module's
            // precondition).
            unsafe { T::pack_a_rows(kc, a.add(i0 * rsa), rsa, panel) };
            continue;
        } else if csa == 1 {
            // rows contiguous: read along each row
            for r in 0..rows {
                let src = unsafe { a.add((i0 + r) * rsa) };
                for p in 0..kc {
                    unsafe { *panel.add(p * mr + r) = *src.add(p) };
                }
            }
        } else if rsa == 1 && rows == mr {
            // columns contiguous (A read transposed): MR elements per step
            for p in 0..kc {
                unsafe {
                    std::ptr::copy_nonoverlapping(a.add(i0 + p * csa), panel.add(p * mr), mr)
                };
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
        if csb != 1 && rsb == 1 && cols == nr {
            // SAFETY: NR whole columns of kc elements at stride csb inside
            // the block; the panel holds NR·kc elements; AVX2 (this
            // module's precondition).
            unsafe { T::pack_b_cols(kc, b.add(j0 * csb), csb, panel) };
            continue;
        }
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

    /// Transposes the 8×8 block in `r`: afterwards `r[c][i]` is the old
    /// `r[i][c]`.
    #[inline(always)]
    fn transpose8_ps(r: &mut [__m256; 8]) {
        // SAFETY: register shuffles only (AVX, which the callers enable).
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            r[0] = _mm256_permute2f128_ps::<0x20>(u0, u4);
            r[1] = _mm256_permute2f128_ps::<0x20>(u1, u5);
            r[2] = _mm256_permute2f128_ps::<0x20>(u2, u6);
            r[3] = _mm256_permute2f128_ps::<0x20>(u3, u7);
            r[4] = _mm256_permute2f128_ps::<0x31>(u0, u4);
            r[5] = _mm256_permute2f128_ps::<0x31>(u1, u5);
            r[6] = _mm256_permute2f128_ps::<0x31>(u2, u6);
            r[7] = _mm256_permute2f128_ps::<0x31>(u3, u7);
        }
    }

    /// Transposes the 4×4 block in `r`: afterwards `r[c][i]` is the old
    /// `r[i][c]`.
    #[inline(always)]
    fn transpose4_pd(r: &mut [__m256d; 4]) {
        // SAFETY: register shuffles only (AVX, which the callers enable).
        unsafe {
            let t0 = _mm256_unpacklo_pd(r[0], r[1]);
            let t1 = _mm256_unpackhi_pd(r[0], r[1]);
            let t2 = _mm256_unpacklo_pd(r[2], r[3]);
            let t3 = _mm256_unpackhi_pd(r[2], r[3]);
            r[0] = _mm256_permute2f128_pd::<0x20>(t0, t2);
            r[1] = _mm256_permute2f128_pd::<0x20>(t1, t3);
            r[2] = _mm256_permute2f128_pd::<0x31>(t0, t2);
            r[3] = _mm256_permute2f128_pd::<0x31>(t1, t3);
        }
    }

    /// # Safety
    /// As [`Micro::pack_a_rows`] for f32 (MR 6).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_a_rows_f32(kc: usize, a: *const f32, rsa: usize, dst: *mut f32) {
        let full = kc - kc % 8;
        for p in (0..full).step_by(8) {
            // rows 6 and 7 are padding: their lanes land in the two slots
            // that the next column's store overwrites
            let mut r = [_mm256_setzero_ps(); 8];
            for (i, v) in r.iter_mut().enumerate().take(6) {
                // SAFETY: row i < MR, elements p..p + 8 <= kc.
                *v = unsafe { _mm256_loadu_ps(a.add(i * rsa + p)) };
            }
            transpose8_ps(&mut r);
            // SAFETY: column p + c is dst[(p + c)·6 ..][..6]; the 8-lane
            // stores of columns 0..7 reach 2 elements into the next
            // column, which its own store then writes; the last column is
            // stored as 4 + 2 lanes, so nothing is written past column p + 7.
            unsafe {
                for (c, v) in r.iter().enumerate().take(7) {
                    _mm256_storeu_ps(dst.add((p + c) * 6), *v);
                }
                let last = dst.add((p + 7) * 6);
                _mm_storeu_ps(last, _mm256_castps256_ps128(r[7]));
                let hi = _mm256_extractf128_ps::<1>(r[7]);
                _mm_store_sd(last.add(4).cast(), _mm_castps_pd(hi));
            }
        }
        for p in full..kc {
            for i in 0..6 {
                // SAFETY: row i < MR, element p < kc; slot p·6 + i < 6·kc.
                unsafe { *dst.add(p * 6 + i) = *a.add(i * rsa + p) };
            }
        }
    }

    /// # Safety
    /// As [`Micro::pack_b_cols`] for f32 (NR 16).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_b_cols_f32(kc: usize, b: *const f32, csb: usize, dst: *mut f32) {
        let full = kc - kc % 8;
        for p in (0..full).step_by(8) {
            for half in 0..2 {
                let mut r = [_mm256_setzero_ps(); 8];
                for (j, v) in r.iter_mut().enumerate() {
                    // SAFETY: column 8·half + j < NR, elements p..p + 8 <= kc.
                    *v = unsafe { _mm256_loadu_ps(b.add((8 * half + j) * csb + p)) };
                }
                transpose8_ps(&mut r);
                for (c, v) in r.iter().enumerate() {
                    // SAFETY: row p + c < kc of the panel, lanes 8·half.. of 16.
                    unsafe { _mm256_storeu_ps(dst.add((p + c) * 16 + 8 * half), *v) };
                }
            }
        }
        for p in full..kc {
            for j in 0..16 {
                // SAFETY: column j < NR, element p < kc; slot p·16 + j.
                unsafe { *dst.add(p * 16 + j) = *b.add(j * csb + p) };
            }
        }
    }

    /// # Safety
    /// As [`Micro::pack_a_rows`] for f64 (MR 6).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_a_rows_f64(kc: usize, a: *const f64, rsa: usize, dst: *mut f64) {
        let full = kc - kc % 4;
        for p in (0..full).step_by(4) {
            // SAFETY (the block): rows i < MR, elements p..p + 4 <= kc;
            // column p + c is dst[(p + c)·6 ..][..6]: rows 0-3 from the
            // transposed block, rows 4-5 as pairs.
            unsafe {
                let mut r: [__m256d; 4] =
                    std::array::from_fn(|i| _mm256_loadu_pd(a.add(i * rsa + p)));
                transpose4_pd(&mut r);
                let r4 = _mm256_loadu_pd(a.add(4 * rsa + p));
                let r5 = _mm256_loadu_pd(a.add(5 * rsa + p));
                let lo = _mm256_unpacklo_pd(r4, r5); // (4,5) at p, p + 2
                let hi = _mm256_unpackhi_pd(r4, r5); // (4,5) at p + 1, p + 3
                let pairs = [
                    _mm256_castpd256_pd128(lo),
                    _mm256_castpd256_pd128(hi),
                    _mm256_extractf128_pd::<1>(lo),
                    _mm256_extractf128_pd::<1>(hi),
                ];
                for c in 0..4 {
                    let col = dst.add((p + c) * 6);
                    _mm256_storeu_pd(col, r[c]);
                    _mm_storeu_pd(col.add(4), pairs[c]);
                }
            }
        }
        for p in full..kc {
            for i in 0..6 {
                // SAFETY: row i < MR, element p < kc; slot p·6 + i < 6·kc.
                unsafe { *dst.add(p * 6 + i) = *a.add(i * rsa + p) };
            }
        }
    }

    /// # Safety
    /// As [`Micro::pack_b_cols`] for f64 (NR 8).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_b_cols_f64(kc: usize, b: *const f64, csb: usize, dst: *mut f64) {
        let full = kc - kc % 4;
        for p in (0..full).step_by(4) {
            for half in 0..2 {
                // SAFETY: columns 4·half + j < NR, elements p..p + 4 <= kc;
                // rows p + c < kc of the panel, lanes 4·half.. of 8.
                unsafe {
                    let mut r: [__m256d; 4] =
                        std::array::from_fn(|j| _mm256_loadu_pd(b.add((4 * half + j) * csb + p)));
                    transpose4_pd(&mut r);
                    for (c, v) in r.iter().enumerate() {
                        _mm256_storeu_pd(dst.add((p + c) * 8 + 4 * half), *v);
                    }
                }
            }
        }
        for p in full..kc {
            for j in 0..8 {
                // SAFETY: column j < NR, element p < kc; slot p·8 + j.
                unsafe { *dst.add(p * 8 + j) = *b.add(j * csb + p) };
            }
        }
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
        #[inline(always)]
        unsafe fn pack_a_rows(kc: usize, a: *const f32, rsa: usize, dst: *mut f32) {
            // SAFETY: the trait's contract.
            unsafe { pack_a_rows_f32(kc, a, rsa, dst) }
        }
        #[inline(always)]
        unsafe fn pack_b_cols(kc: usize, b: *const f32, csb: usize, dst: *mut f32) {
            // SAFETY: the trait's contract.
            unsafe { pack_b_cols_f32(kc, b, csb, dst) }
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
        #[inline(always)]
        unsafe fn pack_a_rows(kc: usize, a: *const f64, rsa: usize, dst: *mut f64) {
            // SAFETY: the trait's contract.
            unsafe { pack_a_rows_f64(kc, a, rsa, dst) }
        }
        #[inline(always)]
        unsafe fn pack_b_cols(kc: usize, b: *const f64, csb: usize, dst: *mut f64) {
            // SAFETY: the trait's contract.
            unsafe { pack_b_cols_f64(kc, b, csb, dst) }
        }
    }
}

/// `C = A·B` split across the pool ([`super::par_tasks`]) into blocks of
/// C's rows or of its columns (see [`Grid`]). The operand every block reads
/// (B for row blocks, A for column blocks) is packed once into a shared
/// buffer, in parallel, before the products; each block packs its own part
/// of the other operand as it goes, runs the microkernels, and hands each
/// finished row segment to `epilogue`.
/// Returns `false` (having done nothing) on another CPU or element type,
/// or when a packed copy cannot be allocated.
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
    epilogue: Option<Epilogue<'_, T>>,
) -> bool {
    if !available() || m == 0 || n == 0 || k == 0 {
        return false;
    }
    // SAFETY: as in `gemm`; an epilogue over `T` is one over `U` (the same
    // type).
    by_float_type!(T, U => unsafe {
        let epilogue: Option<Epilogue<'_, U>> = std::mem::transmute(epilogue);
        blocked_par::<U>(m, k, n, a.cast(), rsa, csa, b.cast(), rsb, csb, c.cast(), ldc, epilogue)
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

/// How a split product divides C: `rows × cols` blocks of `rows_per ×
/// cols_per` elements (multiples of `MR` and `NR`; the last ones smaller).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Grid {
    rows: usize,
    rows_per: usize,
    cols: usize,
    cols_per: usize,
}

impl Grid {
    /// Blocks of rows when C is at least as tall as it is wide, of columns
    /// otherwise: the operand shared by the blocks (B, or A) is packed once
    /// up front, the other is packed by each block as it goes, hot in its
    /// core's caches. Measured (Zen 3, 2 threads, every grid from 1×2 to
    /// 16×1): a batch-128 layer's products (128×784·784×256 up to
    /// 128×2048·2048×2048) ran 20–30% faster split by columns than by
    /// rows, a batch-2048 one (2048×784·784×256) 10% faster by rows, and
    /// a square one (1024³) the same either way; cutting C in both
    /// directions was never better.
    ///
    /// One block per thread for products up to ~32M multiply-adds a
    /// thread, up to four for larger ones: fewer, larger blocks ran 5–10%
    /// faster than four per thread at the batch-128 shapes, while for large
    /// products more blocks cost little and let a thread that is slow to
    /// start (its core busy) leave its share to the others.
    fn choose<T: Micro>(m: usize, n: usize, k: usize, threads: usize) -> Grid {
        let per_thread = (m.saturating_mul(n).saturating_mul(k) >> 25).clamp(1, 4);
        let blocks = threads.saturating_mul(per_thread).max(1);
        if m >= n {
            let rows_per = m.div_ceil(blocks).next_multiple_of(T::MR);
            Grid {
                rows: m.div_ceil(rows_per),
                rows_per,
                cols: 1,
                cols_per: n,
            }
        } else {
            let cols_per = n.div_ceil(blocks).next_multiple_of(T::NR);
            Grid {
                rows: 1,
                rows_per: m,
                cols: n.div_ceil(cols_per),
                cols_per,
            }
        }
    }
}

/// A whole packed operand's size in cache lines: `k` steps of `len`
/// elements (`None` if it overflows).
fn packed_lines<T>(k: usize, len: usize) -> Option<usize> {
    k.checked_mul(len)?
        .checked_mul(size_of::<T>())
        .map(|bytes| bytes.div_ceil(64))
}

/// A shared buffer of `lines` cache lines (the calling thread's kept one,
/// grown if needed), or `None` if it cannot be allocated.
fn take_shared(lines: usize) -> Option<Vec<Line>> {
    // the thread's buffer from earlier products (a fresh one would be
    // page-faulted in on every call)
    let mut buf = BUFS.with(|b| {
        b.try_borrow_mut()
            .map(|mut b| std::mem::take(&mut b.shared))
            .unwrap_or_default()
    });
    buf.clear();
    buf.try_reserve_exact(lines).ok()?;
    Some(buf)
}

/// Keeps a shared buffer for the calling thread's next product, unless it
/// is very large (64 MiB).
fn keep_shared(buf: Vec<Line>) {
    if buf.capacity() <= 1 << 20 {
        BUFS.with(|b| {
            if let Ok(mut b) = b.try_borrow_mut() {
                b.shared = buf;
            }
        });
    }
}

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
    epilogue: Option<Epilogue<'_, T>>,
) -> bool {
    let grid = Grid::choose::<T>(m, n, k, super::threads());
    // The operand all blocks read is packed whole, depth block `pc` at
    // pc·pad: B (panels of NR columns) for row blocks, A (panels of MR
    // rows) for column blocks.
    let share_a = grid.cols > 1;
    let pad = if share_a {
        m.next_multiple_of(T::MR)
    } else {
        n.next_multiple_of(T::NR)
    };
    let Some(lines) = packed_lines::<T>(k, pad) else {
        return false;
    };
    let Some(mut packed) = take_shared(lines) else {
        return false;
    };
    // written by the packing below before any read (every element,
    // padding included)
    let shared = Shared(packed.as_mut_ptr().cast::<T>());
    let (ap, bp, cp) = (Shared(a.cast_mut()), Shared(b.cast_mut()), Shared(c));

    // packing: tasks of 8 micro-panels of one depth block
    const PANELS_PER_TASK: usize = 8;
    let panel = if share_a { T::MR } else { T::NR };
    let groups = (pad / panel).div_ceil(PANELS_PER_TASK);
    let pack = |t: usize| {
        let (a, b, shared) = (ap, bp, shared);
        let pc = (t / groups) * T::KC;
        let kc = T::KC.min(k - pc);
        let at = (t % groups) * PANELS_PER_TASK * panel;
        let len = PANELS_PER_TASK * panel;
        // SAFETY: the block (at.., pc..) of A, or (pc.., at..) of B, lies
        // inside the operand; its packed panels are the
        // kc·len.next_multiple_of(panel) elements at pc·pad + at·kc, inside
        // the buffer (k·pad elements) and disjoint from other tasks'.
        unsafe {
            let dst = shared.0.add(pc * pad + at * kc);
            if share_a {
                pack_a(
                    len.min(m - at),
                    kc,
                    a.0.add(at * rsa + pc * csa),
                    rsa,
                    csa,
                    dst,
                )
            } else {
                pack_b(
                    kc,
                    len.min(n - at),
                    b.0.add(pc * rsb + at * csb),
                    rsb,
                    csb,
                    dst,
                )
            }
        };
    };
    let pack_tasks = k.div_ceil(T::KC) * groups;
    if k * pad >= 1 << 16 {
        super::par_tasks(pack_tasks, pack);
    } else {
        (0..pack_tasks).for_each(pack);
    }

    super::par_tasks(grid.rows * grid.cols, |t| {
        let (i0, j0) = (
            (t / grid.cols) * grid.rows_per,
            (t % grid.cols) * grid.cols_per,
        );
        let (rows, cols) = (grid.rows_per.min(m - i0), grid.cols_per.min(n - j0));
        let (a, b, shared, c) = (ap, bp, shared, cp);
        BUFS.with(|bufs| {
            let mut fresh = PackBufs::default();
            let mut held = bufs.try_borrow_mut();
            let bufs = match held.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            // this block's own packing buffer: one depth block of its
            // columns of B, or of an MC block of its rows of A
            let own = if share_a {
                reserve::<T>(&mut bufs.b, cols.next_multiple_of(T::NR) * T::KC.min(k))
            } else {
                reserve::<T>(
                    &mut bufs.a,
                    T::MC.min(rows).next_multiple_of(T::MR) * T::KC.min(k),
                )
            };
            for pc in (0..k).step_by(T::KC) {
                let kc = T::KC.min(k - pc);
                let last = pc + kc == k;
                if share_a {
                    // SAFETY: the block (pc.., j0..) of B lies inside B;
                    // `own` holds its packed panels (reserved above).
                    unsafe { pack_b(kc, cols, b.0.add(pc * rsb + j0 * csb), rsb, csb, own) };
                }
                for ic in (0..rows).step_by(T::MC) {
                    let mc = T::MC.min(rows - ic);
                    // SAFETY: the A block (i0 + ic.., pc..) lies inside A
                    // and is packed into `own` here, or was packed at
                    // pc·pad + (i0 + ic)·kc of the shared buffer above
                    // (i0 + ic is a multiple of MR); likewise B's block
                    // (pc.., j0..); the C block (i0 + ic.., j0..) lies
                    // inside C and no other task touches it.
                    unsafe {
                        let (pa, pb) = if share_a {
                            (shared.0.add(pc * pad + (i0 + ic) * kc), own)
                        } else {
                            let src = a.0.add((i0 + ic) * rsa + pc * csa);
                            pack_a(mc, kc, src, rsa, csa, own);
                            (own, shared.0.add(pc * pad + j0 * kc))
                        };
                        let cb = c.0.add((i0 + ic) * ldc + j0);
                        macro_kernel(mc, cols, kc, pa, pb, cb, ldc, pc > 0);
                        if last && let Some(epilogue) = epilogue {
                            // the block's rows are final (last depth block)
                            run_epilogue(epilogue, i0 + ic, mc, j0, cols, cb, ldc);
                        }
                    }
                }
            }
        });
    });
    keep_shared(packed);
    true
}

/// Hands the rows of the `rows×cols` block of C at `c` (row `i0`, column
/// `j0` of C) to `epilogue`.
///
/// # Safety
/// The block lies inside C, holds final values, and nothing else accesses
/// it during the call.
unsafe fn run_epilogue<T>(
    epilogue: Epilogue<'_, T>,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    c: *mut T,
    ldc: usize,
) {
    for r in 0..rows {
        // SAFETY: row r of the block: `cols` initialized elements, borrowed
        // by nothing else (the contract).
        let seg = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        epilogue(i0 + r, j0, seg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `C = A·B` through [`gemm`] (row-major operands, `ldc = n`).
    fn product<T: Element>(m: usize, k: usize, n: usize, a: &[T], b: &[T]) -> Vec<T> {
        let mut c = vec![T::zero(); m * n];
        // SAFETY: A is m×k, B k×n, C m×n, all row-major and distinct.
        let done = unsafe {
            gemm(
                m,
                k,
                n,
                a.as_ptr(),
                k,
                1,
                b.as_ptr(),
                n,
                1,
                c.as_mut_ptr(),
                n,
                false,
                None,
            )
        };
        assert!(done || !available());
        c
    }

    fn narrow_products_keep_the_bits_of_wide_ones<T: Element>() {
        // a narrow C (taking the transposed route) against the first
        // columns of a wide one (the direct route), over two depth blocks
        if !available() {
            return;
        }
        let (m, k, wide) = (40, 300, 32);
        let val = |i: usize| T::of(((i * 7919) % 1013) as f64 / 97.0 - 5.0);
        let a: Vec<T> = (0..m * k).map(val).collect();
        let bw: Vec<T> = (0..k * wide).map(|i| val(i + 17)).collect();
        let cw = product(m, k, wide, &a, &bw);
        for n in 1..=wide {
            let b: Vec<T> = (0..k * n).map(|i| bw[i / n * wide + i % n]).collect();
            let c = product(m, k, n, &a, &b);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(
                        c[i * n + j].to_f64().unwrap().to_bits(),
                        cw[i * wide + j].to_f64().unwrap().to_bits(),
                        "n = {n}, ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn narrow_products_keep_the_bits_of_wide_ones_f32() {
        narrow_products_keep_the_bits_of_wide_ones::<f32>();
    }

    #[test]
    fn narrow_products_keep_the_bits_of_wide_ones_f64() {
        narrow_products_keep_the_bits_of_wide_ones::<f64>();
    }

    #[test]
    fn grids_split_the_longer_side_of_c() {
        // a batch-128 layer: column blocks, one per thread
        let g = Grid::choose::<f32>(128, 256, 784, 2);
        assert_eq!((g.rows, g.cols, g.cols_per), (1, 2, 128), "{g:?}");
        // a batch-2048 one: row blocks, four per thread
        let g = Grid::choose::<f32>(2048, 256, 784, 2);
        assert_eq!((g.rows, g.rows_per, g.cols), (8, 258, 1), "{g:?}");
        for &(m, n, k, threads) in &[
            (128, 256, 784, 2),
            (128, 784, 256, 2),
            (2048, 256, 784, 2),
            (50176, 64, 288, 2),
            (7, 5, 3, 2),
            (1000, 1000, 1000, 8),
            (6, 4096, 64, 4),
        ] {
            let g = Grid::choose::<f32>(m, n, k, threads);
            assert!(g.rows_per.is_multiple_of(6) || g.rows == 1, "{g:?}");
            assert!(g.cols_per.is_multiple_of(16) || g.cols == 1, "{g:?}");
            assert!(
                g.rows * g.rows_per >= m && (g.rows - 1) * g.rows_per < m,
                "{g:?}"
            );
            assert!(
                g.cols * g.cols_per >= n && (g.cols - 1) * g.cols_per < n,
                "{g:?}"
            );
            assert!(
                g.rows * g.cols <= 4 * threads && (g.rows == 1 || g.cols == 1),
                "{g:?}"
            );
        }
    }
}
