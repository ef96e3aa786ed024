//! Compensated float sums: Knuth's two-sum, Neumaier's running sum, and `LANES` independent
//! branch-free compensated sums (what a reduction's first pass uses for float sums).

/// `a + b` and its rounding error (Knuth's two-sum): `a + b == s + e` exactly.
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// How far ahead of the sums [`prefetch`] asks for memory, in bytes (`mean(x)` over 100M
/// float64, -j 2, CPU time of the median run: 161 ms at 1 KiB, 150 ms at 2 KiB, 163 ms at 4 KiB).
const PREFETCH_AHEAD: usize = 2048;

/// Asks the CPU to start loading the cache line of `bytes[at]` (when `at` is inside `bytes`;
/// x86-64 only). The sums' dependent adds keep few loads in flight, so values read straight
/// from memory (a mapped file) would arrive one latency at a time; with this they stream.
#[inline(always)]
fn prefetch(bytes: &[u8], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = bytes.get(at) {
        #[allow(unsafe_code)]
        // SAFETY: a prefetch is a hint to the cache: it never faults, never reads into the
        // program and has no effect on memory; `p` points into `bytes` all the same.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(p).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, at);
}

/// Independent sums of `Reducer::fast_float_sum`.
pub(crate) const LANES: usize = 8;

/// `LANES` compensated sums of the `SIZE`-byte elements of `bytes`, read by `get` (element
/// `k` into lane `k % LANES`): the lanes' sums, their accumulated rounding errors, the
/// number of values, and with `BIG` the largest magnitude of a value (NaNs aside; a
/// branch-free `max`; 0 without `BIG`, which leaves it out of the loop).
pub(crate) fn lanes<const SIZE: usize, const BIG: bool>(
    bytes: &[u8],
    get: impl Fn([u8; SIZE]) -> f64,
) -> ([f64; LANES], [f64; LANES], u64, f64) {
    let (mut s, mut c, mut m) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    let add = |l: usize, v: f64| {
        let (t, e) = two_sum(s[l], v);
        s[l] = t;
        c[l] += e;
        if BIG {
            m[l] = m[l].max(v.abs());
        }
    };
    each_lane(bytes, get, add);
    (s, c, (bytes.len() / SIZE) as u64, m.into_iter().fold(0.0, f64::max))
}

/// Calls `add(lane, value)` for each `SIZE`-byte element of `bytes`, read by `get` (element
/// `k` into lane `k % LANES`), prefetching ahead of the adds.
#[inline(always)]
fn each_lane<const SIZE: usize>(bytes: &[u8], get: impl Fn([u8; SIZE]) -> f64, mut add: impl FnMut(usize, f64)) {
    let whole = bytes.chunks_exact(SIZE * LANES);
    let rest = whole.remainder();
    for (k, block) in whole.enumerate() {
        prefetch(bytes, k * SIZE * LANES + PREFETCH_AHEAD);
        for l in 0..LANES {
            add(l, get(block[l * SIZE..(l + 1) * SIZE].try_into().expect("SIZE bytes")));
        }
    }
    for (l, e) in rest.chunks_exact(SIZE).enumerate() {
        add(l, get(e.try_into().expect("SIZE bytes")));
    }
}

pub(crate) fn neumaier(sum: &mut f64, comp: &mut f64, v: f64) {
    let t = *sum + v;
    if !t.is_finite() {
        // An infinity or NaN is the sum from now on; the compensation (inf - inf) would be NaN.
        *sum = t;
        return;
    }
    if sum.abs() >= v.abs() {
        *comp += (*sum - t) + v;
    } else {
        *comp += (v - t) + *sum;
    }
    *sum = t;
}

/// `a * a` and its rounding error without a fused multiply-add (Dekker's product, Veltkamp's
/// split): branch-free, so that it vectorises where `f64::mul_add` would be a libm call per
/// value. Not finite when `|a|` nears `f64::MAX` (the split overflows): callers check.
fn two_square(a: f64) -> (f64, f64) {
    let p = a * a;
    let c = 134_217_729.0 * a; // 2^27 + 1
    let hi = c - (c - a);
    let lo = a - hi;
    (p, ((hi * hi - p) + 2.0 * hi * lo) + lo * lo)
}

/// The second pass of `std`/`var` over `bytes` in `LANES` branch-free lanes: per lane, the
/// compensated sum of the squared deviations from `mean` (`[0]` sums, `[1]` their errors) and
/// of the deviations (`[2]`, `[3]`), each deviation and square exact to its last bits (two-sum,
/// [`two_square`]), as the value-by-value path computes them.
pub(crate) fn deviation_lanes<const SIZE: usize>(
    bytes: &[u8],
    get: impl Fn([u8; SIZE]) -> f64,
    mean: f64,
) -> [[f64; LANES]; 4] {
    let mut acc = [[0.0f64; LANES]; 4];
    let add = |l: usize, v: f64| {
        let (dv, de) = two_sum(v, -mean);
        let (sq, sqe) = two_square(dv);
        let (t, e) = two_sum(acc[0][l], sq);
        acc[0][l] = t;
        acc[1][l] += e + sqe + 2.0 * dv * de;
        let (t, e) = two_sum(acc[2][l], dv);
        acc[2][l] = t;
        acc[3][l] += e + de;
    };
    each_lane(bytes, get, add);
    acc
}
