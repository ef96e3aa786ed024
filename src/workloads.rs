//! The standard workloads every benchmark reports (see DESIGN.md), shared by the command line,
//! the benches and the tests (each includes this file by path: it is not part of the library)
//! so they all measure the same thing.
//!
//! - W1, memory-bound: `out = sqrt(x) * 1.5 + 0.25` over `x[i] = (i % 1000) + 0.5`.
//! - W2, compute-bound: 64 iterations of `y = sin(y) * 0.9 + 0.1` from `y = x`.
//! - W3, latency: a 1024-element batch through W1's function.
// Each includer (binary, tests, benches) uses a different part.
#![allow(dead_code)]
#![deny(unsafe_code)]

/// Elements in the W1 dataset.
pub const W1_LEN: usize = 50_000_000;
/// Elements in the W2 dataset.
pub const W2_LEN: usize = 2_000_000;
/// Elements in a W3 batch.
pub const W3_LEN: usize = 1024;
/// Iterations of W2's recurrence.
pub const W2_ITERS: usize = 64;

/// The W1/W2 input pattern: `x[i] = (i % 1000) + 0.5`.
#[inline]
pub fn pattern(i: usize) -> f64 {
    (i % 1000) as f64 + 0.5
}

/// Fills `xs` with [`pattern`], element `k` getting `pattern(start + k)`.
pub fn fill_pattern(xs: &mut [f64], start: usize) {
    for (k, x) in xs.iter_mut().enumerate() {
        *x = pattern(start + k);
    }
}

/// W1 for one element.
#[inline]
pub fn w1(x: f64) -> f64 {
    x.sqrt() * 1.5 + 0.25
}

/// W1 as a chunk kernel.
pub fn w1_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = w1(x);
    }
}

/// W2 for one element.
#[inline]
pub fn w2(x: f64) -> f64 {
    let mut y = x;
    for _ in 0..W2_ITERS {
        y = y.sin() * 0.9 + 0.1;
    }
    y
}

/// W2 as a chunk kernel.
pub fn w2_chunk(xs: &[f64], ys: &mut [f64]) {
    for (y, &x) in ys.iter_mut().zip(xs) {
        *y = w2(x);
    }
}
