//! The steady-state submit / wait path allocates nothing: a counting global allocator counts
//! this thread's allocations around 1,000 round trips after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// thread-local `Cell` with const initialisation (no allocation, no lazy init).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}

#[test]
fn submit_and_wait_into_allocate_nothing_in_the_steady_state() {
    let pool = shmpool::Pool::new(1).unwrap();
    let xs: Vec<f64> = (0..1024).map(|i| i as f64 + 0.5).collect();
    let mut out = vec![0.0; 1024];
    for _ in 0..200 {
        pool.submit(&xs, w1).unwrap().wait_into(&mut out).unwrap();
    }
    let before = allocations();
    for _ in 0..1000 {
        pool.submit(&xs, w1).unwrap().wait_into(&mut out).unwrap();
    }
    let n = allocations() - before;
    assert_eq!(n, 0, "{n} allocations in 1,000 round trips");
    assert!(xs.iter().zip(&out).all(|(x, y)| w1(*x) == *y));
    // Larger, staged tickets reuse the pool's staging buffers and bookkeeping too.
    let big: Vec<f64> = (0..200_000).map(|i| i as f64).collect();
    let mut big_out = vec![0.0; big.len()];
    for _ in 0..5 {
        pool.submit(&big, w1).unwrap().wait_into(&mut big_out).unwrap();
    }
    let before = allocations();
    for _ in 0..20 {
        pool.submit(&big, w1).unwrap().wait_into(&mut big_out).unwrap();
    }
    assert_eq!(allocations() - before, 0, "staged round trips allocate");
}
