//! Register allocation for the SSA instructions the compiler emits (register k is written by
//! instruction k): fusion, dead-code elimination, invariant hoisting, linear scan.

use super::{fuse, Ins, Op, Program, INVARIANT};
use crate::Dtype;

/// Registers of invariants and of `x` are never shared; a destination is never one of its own
/// operands; the result's register is never reused.
pub(super) fn allocate(mut ins: Vec<Ins>, result: u32, inputs: Vec<Dtype>) -> Program {
    let mut result = result;
    fuse::epilogues(&mut ins, &mut result);
    let n = ins.len();
    let live = liveness(&ins, result);
    // sin/cos pairs: both computed where the first of the two stands.
    let mut partner = vec![None; n];
    for (s, c) in fuse::sincos(&ins, &live).into_iter().enumerate() {
        if let Some(c) = c {
            partner[s] = Some(c);
            partner[c] = Some(s);
        }
    }
    let (invariant, last_use) = uses(&ins);
    let mut phys = vec![u32::MAX; n];
    let mut freed = vec![false; n];
    let mut free: Vec<u32> = Vec::new();
    let mut n_regs = 0u32;
    let mut out = Vec::new();
    let mut alloc = |k: usize, free: &mut Vec<u32>| -> u32 {
        // An invariant is computed in the first block only, and the input's register is an
        // alias of the input: neither register may be anybody else's, before or after.
        let reuse = if invariant[k] || ins[k].op == Op::LoadX { None } else { free.pop() };
        reuse.unwrap_or_else(|| {
            n_regs += 1;
            n_regs - 1
        })
    };
    for k in 0..n {
        if !live[k] {
            continue;
        }
        let mut i = ins[k];
        let emit = phys[k] == u32::MAX; // the second of a sin/cos pair was computed already
        if emit {
            phys[k] = alloc(k, &mut free);
            if let Some(p) = partner[k] {
                phys[p] = alloc(p, &mut free);
            }
        }
        for s in 0..3 {
            if i.is_reg(s) {
                i.src[s] = phys[i.src[s] as usize];
            }
        }
        for s in (0..3).filter(|&s| ins[k].is_reg(s)) {
            let v = ins[k].src[s] as usize;
            let keep = invariant[v] || ins[v].op == Op::LoadX || v == result as usize || freed[v];
            if last_use[v] == k && !keep {
                free.push(phys[v]);
                freed[v] = true; // `x * x` names one register twice: free it once
            }
        }
        if !emit {
            continue;
        }
        if invariant[k] {
            i.flags |= INVARIANT;
        }
        match partner[k] {
            Some(p) => {
                let (sin, cos) = if i.op == Op::Sin { (k, p) } else { (p, k) };
                i.op = Op::SinCos;
                i.dst = phys[sin];
                i.src[2] = phys[cos];
            }
            None => i.dst = phys[k],
        }
        out.push(i);
    }
    let output = ins[result as usize].out_ty;
    let result = phys[result as usize];
    Program { ins: out, n_regs: std::cmp::max(n_regs, 1), result, inputs, output }
}

/// Which instructions' values are needed: the result's, what they read, and every signed
/// integer power by an array (numpy evaluates every sub-expression: its ValueError may be
/// raised even where its value is unused, `isfinite(x ** x)`).
fn liveness(ins: &[Ins], result: u32) -> Vec<bool> {
    let n = ins.len();
    let mut live = vec![false; n];
    live[result as usize] = true;
    for (k, i) in ins.iter().enumerate() {
        if i.op == Op::Pow && i.ty.is_signed_int() && i.flags & super::B_IMM == 0 {
            live[k] = true;
        }
    }
    for k in (0..n).rev() {
        if live[k] {
            for s in 0..3 {
                if ins[k].is_reg(s) {
                    live[ins[k].src[s] as usize] = true;
                }
            }
        }
    }
    live
}

/// For each instruction: whether its value depends on neither `x` nor `i` (invariant), and
/// the last instruction that reads it.
fn uses(ins: &[Ins]) -> (Vec<bool>, Vec<usize>) {
    let n = ins.len();
    let mut invariant = vec![false; n];
    let mut last_use = vec![0usize; n];
    for k in 0..n {
        let i = &ins[k];
        invariant[k] = !matches!(i.op, Op::LoadX | Op::LoadI)
            && (0..3).filter(|&s| i.is_reg(s)).all(|s| invariant[i.src[s] as usize]);
        for s in 0..3 {
            if i.is_reg(s) {
                last_use[i.src[s] as usize] = k;
            }
        }
    }
    (invariant, last_use)
}
