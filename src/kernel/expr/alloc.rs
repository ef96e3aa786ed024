//! Register allocation for the SSA instructions the compiler emits.

use super::{Ins, Op, Program, INVARIANT};
use crate::dtype::Dtype;

/// Dead-code elimination, invariant hoisting and linear-scan register allocation over SSA
/// instructions. Registers of invariants and of `x` are never reused; a destination is never
/// one of its own operands.
pub(super) fn allocate(ins: Vec<Ins>, result: u32, input: Dtype) -> Program {
    let n = ins.len();
    let mut live = vec![false; n];
    live[result as usize] = true;
    for k in (0..n).rev() {
        if live[k] {
            for s in 0..3 {
                if ins[k].is_reg(s) {
                    live[ins[k].src[s] as usize] = true;
                }
            }
        }
    }
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
    let mut phys = vec![u32::MAX; n];
    let mut freed = vec![false; n];
    let mut free: Vec<u32> = Vec::new();
    let mut n_regs = 0u32;
    let mut out = Vec::new();
    for k in 0..n {
        if !live[k] {
            continue;
        }
        let mut i = ins[k];
        // An invariant is computed in the first block only: its register must be nobody
        // else's, before or after.
        // The input's register is an alias of the input: nobody else's either.
        let reuse = if invariant[k] || i.op == Op::LoadX { None } else { free.pop() };
        let dst = reuse.unwrap_or_else(|| {
            n_regs += 1;
            n_regs - 1
        });
        phys[k] = dst;
        for s in 0..3 {
            if i.is_reg(s) {
                i.src[s] = phys[i.src[s] as usize];
            }
        }
        for s in 0..3 {
            let v = ins[k].src[s] as usize;
            let keep = invariant[v] || ins[v].op == Op::LoadX || v == result as usize || freed[v];
            if ins[k].is_reg(s) && last_use[v] == k && !keep {
                free.push(phys[v]);
                freed[v] = true; // `x * x` names one register twice: free it once
            }
        }
        i.dst = dst;
        if invariant[k] {
            i.flags |= INVARIANT;
        }
        out.push(i);
    }
    let output = ins[result as usize].out_ty;
    let result = phys[result as usize];
    Program { ins: out, n_regs: std::cmp::max(n_regs, 1), result, input, output }
}
