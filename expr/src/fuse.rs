//! Fusions on SSA instructions, so an expression costs what the same Rust closure costs:
//!
//! - an **affine epilogue**: a float function whose only user multiplies it by a constant,
//!   and/or adds a constant (`sqrt(x) * 1.5 + 0.25`), runs as one loop
//!   `f(a) * k1 + k2` (two roundings, as written: never a fused multiply-add);
//! - **sincos**: `sin(a)` and `cos(a)` of one operand are computed by one `sincos` call, as
//!   the compiler does for the closure.

use super::{Ins, Op, A_IMM, B_IMM, EPI_ADD, EPI_MUL};

fn is_float_fn(op: Op) -> bool {
    (Op::Sqrt as u32..=Op::Atanh as u32).contains(&(op as u32))
}

/// The constant and the register operand of a binary op with one immediate.
fn with_imm(i: &Ins) -> Option<(u32, u64)> {
    if i.flags & B_IMM != 0 {
        Some((i.src[0], i.imm))
    } else if i.flags & A_IMM != 0 {
        Some((i.src[1], i.imm))
    } else {
        None
    }
}

/// Folds `f(a) * k1 [+ k2]` and `f(a) + k2` into `f`'s instruction; returns, per instruction,
/// the instruction whose value it now is (itself unless fused away). Commutativity of IEEE
/// `*` and `+` makes `k * f(a)` the same value as `f(a) * k`.
pub(super) fn epilogues(ins: &mut [Ins], result: &mut u32) -> Vec<u32> {
    let n = ins.len();
    let mut uses = vec![0u32; n];
    let mut user = vec![u32::MAX; n];
    for (k, i) in ins.iter().enumerate() {
        for s in 0..3 {
            if i.is_reg(s) {
                uses[i.src[s] as usize] += 1;
                user[i.src[s] as usize] = k as u32;
            }
        }
    }
    let mut alias: Vec<u32> = (0..n as u32).collect();
    for k in 0..n {
        if !is_float_fn(ins[k].op) || ins[k].flags != 0 || uses[k] != 1 || k as u32 == *result {
            continue;
        }
        let ty = ins[k].ty;
        let next = |ins: &[Ins], at: usize, op: Op| -> Option<(usize, u64)> {
            let u = user[at] as usize;
            let i = &ins[u];
            (i.op == op && i.ty == ty).then_some(())?;
            let (r, imm) = with_imm(i)?;
            (r as usize == at).then_some((u, imm))
        };
        let mut last = k;
        if let Some((m, k1)) = next(ins, k, Op::Mul) {
            ins[k].flags |= EPI_MUL;
            ins[k].imm = k1;
            last = m;
        }
        if uses[last] == 1 && last as u32 != *result {
            if let Some((a, k2)) = next(ins, last, Op::Add) {
                ins[k].flags |= EPI_ADD;
                ins[k].src[1] = k2 as u32;
                ins[k].src[2] = (k2 >> 32) as u32;
                last = a;
            }
        }
        if last != k {
            alias[last] = k as u32;
            if *result == last as u32 {
                *result = k as u32;
            }
        }
    }
    for i in ins.iter_mut() {
        for s in 0..3 {
            if i.is_reg(s) {
                i.src[s] = alias[i.src[s] as usize];
            }
        }
    }
    alias
}

/// Pairs live `sin(a)` and `cos(a)` of the same type: returns, for each such `sin`, the index
/// of its `cos` (which the allocator then computes in the `sin`'s loop).
pub(super) fn sincos(ins: &[Ins], live: &[bool]) -> Vec<Option<usize>> {
    let mut cos: std::collections::HashMap<(u32, u8), Vec<usize>> = std::collections::HashMap::new();
    for (c, i) in ins.iter().enumerate().rev() {
        if live[c] && i.op == Op::Cos && i.flags == 0 {
            cos.entry((i.src[0], i.ty as u8)).or_default().push(c);
        }
    }
    let mut pair = vec![None; ins.len()];
    for (k, i) in ins.iter().enumerate() {
        if live[k] && i.op == Op::Sin && i.flags == 0 {
            pair[k] = cos.get_mut(&(i.src[0], i.ty as u8)).and_then(Vec::pop);
        }
    }
    pair
}
