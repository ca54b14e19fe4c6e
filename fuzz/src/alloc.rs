//! Counting allocations, to hold readers to "never allocate more than the file backs".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;

/// The system allocator, counting live bytes and their peak per thread (so two workers
/// do not see each other's). A binary opts in with
/// `#[global_allocator] static A: Counting = Counting;`; without it, [`measure`] says 0.
pub struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

/// A single request above this is refused (and reported) rather than left to the system:
/// no reader needs it, and the system would grant it lazily and kill us later.
pub const MAX_ALLOCATION: usize = 16 << 30;

/// Called, once, with the size of a refused request, before the allocation fails (and
/// the process aborts — an allocation failure cannot be caught): the fuzzer saves the input.
static ON_REFUSED: OnceLock<fn(usize)> = OnceLock::new();

/// Sets what runs when a request above [`MAX_ALLOCATION`] is refused.
pub fn on_refused(f: fn(usize)) {
    let _ = ON_REFUSED.set(f);
}

fn refuse(size: usize) -> *mut u8 {
    if let Some(f) = ON_REFUSED.get() {
        f(size);
    }
    std::ptr::null_mut()
}

fn count(delta: i64) {
    // `try_with`: a thread being torn down has no counters left, and that is fine.
    let _ = LIVE.try_with(|live| {
        let v = live.get() + delta;
        live.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call goes straight to `System` with the caller's arguments, or returns
// null (a refusal the caller must handle anyway); the counters are thread-local cells
// that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > MAX_ALLOCATION {
            return refuse(l.size());
        }
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            count(l.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > MAX_ALLOCATION {
            return refuse(l.size());
        }
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            count(l.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        count(-(l.size() as i64));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > MAX_ALLOCATION {
            return refuse(new);
        }
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            count(new as i64 - l.size() as i64);
        }
        q
    }
}

/// The peak bytes `f` had allocated at once on this thread, above what was live before.
pub fn measure(f: &mut dyn FnMut()) -> u64 {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as u64
}
