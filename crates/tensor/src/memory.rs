//! Reuse of large tensor buffers between training steps.
//!
//! A training step allocates the same large buffers every step (activations,
//! gradients, im2col blocks) and frees them all at its end. Left to the
//! system allocator, glibc hands the freed top of its heap back to the
//! kernel (`brk` trim) and serves big blocks with fresh `mmap`s, so every
//! step page-faults and zeroes all its memory again: a quarter of a CNN
//! training step in `perf` (page faults, `clear_page`, `munmap`), and the
//! step ran 2× faster when trimming was switched off. So, as dfdx's tensor
//! cache and PyTorch's caching allocator do, freed buffers of at least
//! [`MIN_CACHED_BYTES`] go to a per-element-type cache and the next request
//! of the same length takes one back, up to [`cache_limit`] bytes in all
//! (the least recently freed are dropped first). Small buffers never touch
//! the cache (no lock on the hot path of small steps).
//!
//! ```
//! use rime_tensor::{Tensor, memory};
//! let a = Tensor::<f32>::zeros([256, 256])?; // 256 KiB
//! drop(a); // its buffer is cached...
//! assert!(memory::cached_bytes() >= 256 * 1024);
//! let b = Tensor::<f32>::ones([256, 256])?; // ...and reused here
//! memory::clear_cache(); // give cached memory back to the allocator
//! assert_eq!(memory::cached_bytes(), 0);
//! memory::set_cache_limit(0); // and cache nothing from now on
//! # memory::set_cache_limit(memory::DEFAULT_CACHE_LIMIT);
//! # drop(b);
//! # Ok::<(), rime_tensor::Error>(())
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::{Result, Scalar};

/// Buffers smaller than this are freed as usual (the allocator's bins
/// serve them without system calls).
pub const MIN_CACHED_BYTES: usize = 64 * 1024;

/// The default of [`cache_limit`]: 1 GiB.
pub const DEFAULT_CACHE_LIMIT: usize = 1 << 30;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_CACHE_LIMIT);
static CACHED: AtomicUsize = AtomicUsize::new(0);
static CLOCK: AtomicU64 = AtomicU64::new(0);

/// The most bytes the cache holds (all element types together).
pub fn cache_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets [`cache_limit`]; buffers above the new limit are freed now. `0`
/// turns the cache off.
pub fn set_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    trim_all(bytes);
}

/// Bytes the cache holds now.
pub fn cached_bytes() -> usize {
    CACHED.load(Ordering::Relaxed)
}

/// Frees every cached buffer (e.g. before a phase that needs other sizes,
/// or to measure a program's live memory).
pub fn clear_cache() {
    trim_all(0);
}

/// Drops cached buffers of every element type until at most `limit`
/// bytes are held.
fn trim_all(limit: usize) {
    f32::buffer_pool().trim(limit);
    f64::buffer_pool().trim(limit);
    i32::buffer_pool().trim(limit);
    i64::buffer_pool().trim(limit);
}

/// One element type's cached buffers (each empty, capacity = its length
/// class), with the time they were freed.
#[doc(hidden)]
pub struct BufferPool<T> {
    slots: Mutex<Vec<(u64, Vec<T>)>>,
}

impl<T: Scalar> BufferPool<T> {
    pub(crate) const fn new() -> Self {
        BufferPool {
            slots: Mutex::new(Vec::new()),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Vec<T>)>> {
        // the slots are plain buffers: a panic elsewhere leaves them valid
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, n: usize) -> Option<Vec<T>> {
        let mut slots = self.slots();
        let i = slots.iter().rposition(|(_, v)| v.capacity() == n)?;
        let (_, v) = slots.swap_remove(i);
        CACHED.fetch_sub(bytes_of(&v), Ordering::Relaxed);
        Some(v)
    }

    fn give(&self, mut v: Vec<T>) {
        let bytes = bytes_of(&v);
        let limit = cache_limit();
        if bytes > limit {
            return;
        }
        v.clear();
        let mut slots = self.slots();
        // make room by dropping this type's least recently freed buffers
        while CACHED.load(Ordering::Relaxed) + bytes > limit {
            let Some(oldest) = (0..slots.len()).min_by_key(|&i| slots[i].0) else {
                return; // other types hold the room: free `v` instead
            };
            let (_, old) = slots.swap_remove(oldest);
            CACHED.fetch_sub(bytes_of(&old), Ordering::Relaxed);
        }
        CACHED.fetch_add(bytes, Ordering::Relaxed);
        slots.push((CLOCK.fetch_add(1, Ordering::Relaxed), v));
    }

    /// Drops buffers (least recently freed first) until all types together
    /// hold at most `limit` bytes or this type holds none.
    fn trim(&self, limit: usize) {
        let mut slots = self.slots();
        slots.sort_by_key(|(stamp, _)| std::cmp::Reverse(*stamp));
        while CACHED.load(Ordering::Relaxed) > limit {
            let Some((_, old)) = slots.pop() else { break };
            CACHED.fetch_sub(bytes_of(&old), Ordering::Relaxed);
        }
    }
}

fn bytes_of<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

fn cacheable<T>(n: usize) -> bool {
    n.saturating_mul(std::mem::size_of::<T>()) >= MIN_CACHED_BYTES
}

/// A cached buffer of exactly `n` elements' capacity, if there is one.
fn cached<T: Scalar>(n: usize) -> Option<Vec<T>> {
    if cacheable::<T>(n) {
        T::buffer_pool().take(n)
    } else {
        None
    }
}

/// An empty buffer with room for exactly `n` elements: a cached one when
/// there is one, else reserved fallibly ([`crate::Error::Alloc`] naming `op`).
pub(crate) fn try_take<T: Scalar>(op: &'static str, n: usize) -> Result<Vec<T>> {
    match cached(n) {
        Some(v) => Ok(v),
        None => crate::kernels::try_vec(op, n),
    }
}

/// As [`try_take`] for a size the op's inputs already bound (a buffer of
/// that size exists), so an allocation failure is the allocator's abort
/// like any `Vec`'s.
pub(crate) fn take<T: Scalar>(n: usize) -> Vec<T> {
    cached(n).unwrap_or_else(|| Vec::with_capacity(n))
}

/// `n` copies of `value` (as `vec![value; n]`, from the cache when it can).
pub(crate) fn filled<T: Scalar>(n: usize, value: T) -> Vec<T> {
    let mut v: Vec<T> = take(n);
    if bytemuck::bytes_of(&value).iter().all(|&b| b == 0) {
        // zeros as one memset (`resize` writes element by element)
        // SAFETY: `v` has capacity `n` (from `take`); all-zero bytes are a
        // valid `T` (`Scalar: Pod`), so the `n` elements are initialized.
        unsafe {
            v.as_mut_ptr().write_bytes(0, n);
            v.set_len(n);
        }
    } else {
        v.resize(n, value);
    }
    v
}

/// Hands a buffer that is no longer needed to the cache (or frees it).
pub(crate) fn recycle<T: Scalar>(v: Vec<T>) {
    if cacheable::<T>(v.capacity()) {
        T::buffer_pool().give(v);
    }
}

#[cfg(test)]
fn held<T: Scalar>(n: usize) -> usize {
    T::buffer_pool()
        .slots()
        .iter()
        .filter(|(_, v)| v.capacity() == n)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Other tests of this binary use the cache at the same time: this one
    // asserts only about i64 buffers of a length no other test uses.
    #[test]
    fn buffers_are_reused_by_length_and_the_limit_holds() {
        let n = MIN_CACHED_BYTES / 8 + 17;
        let mut v = take::<i64>(n);
        v.resize(n, 1);
        let ptr = v.as_ptr();
        recycle(v);
        assert_eq!(held::<i64>(n), 1);
        let again = take::<i64>(n);
        assert_eq!(again.as_ptr(), ptr, "the same buffer comes back");
        assert!(again.is_empty() && again.capacity() == n);
        assert_eq!(held::<i64>(n), 0);
        recycle(again);
        // another length does not take it
        let other = take::<i64>(n + 1);
        assert_ne!(other.as_ptr(), ptr);
        assert_eq!(held::<i64>(n), 1);
        // small buffers bypass the cache
        recycle(vec![0i64; 16]);
        assert_eq!(held::<i64>(16), 0);
        // a zero limit drops what is cached and caches nothing
        set_cache_limit(0);
        assert_eq!(held::<i64>(n), 0);
        recycle(vec![0i64; n]);
        assert_eq!(held::<i64>(n), 0);
        set_cache_limit(DEFAULT_CACHE_LIMIT);
        recycle(vec![0i64; n]);
        assert_eq!(held::<i64>(n), 1);
        assert!(cached_bytes() >= n * 8);
        let filled = filled(n, 7i64);
        assert_eq!(held::<i64>(n), 0);
        assert!(filled.len() == n && filled.iter().all(|&x| x == 7));
    }
}
