//! Decoding a program's parameter block ([`Program::from_bytes`]): every check that keeps a
//! block from another process (shared memory, a file) from making the evaluator misbehave.

use super::{
    dtype_of_code, Dtype, Ins, Instr, Op, Program, A_IMM, B_IMM, EPI_ADD, EPI_MUL, HEADER, MAGIC, MAX_INPUTS, VERSION,
};

impl Program {
    pub(super) fn decode(b: &[u8]) -> Option<Program> {
        let head: [u32; 8] = bytemuck::pod_read_unaligned(b.get(..HEADER)?);
        let [magic, version, n, n_regs, result, n_inputs, output, _] = head;
        let n_inputs = n_inputs as usize;
        if magic != MAGIC
            || version != VERSION
            || n == 0
            || n_regs == 0
            || result >= n_regs
            || !(1..=MAX_INPUTS).contains(&n_inputs)
        {
            return None;
        }
        let codes = b.get(HEADER..HEADER + 4 * n_inputs)?;
        let inputs: Vec<Dtype> = codes
            .chunks_exact(4)
            .map(|c| dtype_of_code(u8::try_from(u32::from_ne_bytes(c.try_into().ok()?)).ok()?))
            .collect::<Option<_>>()?;
        let output = dtype_of_code(u8::try_from(output).ok()?)?;
        let size = std::mem::size_of::<Instr>();
        let at = HEADER + 4 * n_inputs;
        let body = b.get(at..at.checked_add((n as usize).checked_mul(size)?)?)?;
        let mut ins = Vec::with_capacity(n as usize);
        for raw in body.chunks_exact(size) {
            let r: Instr = bytemuck::pod_read_unaligned(raw);
            let op = Op::try_from(r.op).ok()?;
            let ty = dtype_of_code(r.ty)?;
            let out_ty = dtype_of_code(r.out_ty)?;
            let want = if op == Op::Cast { Some(out_ty) } else { op.result(ty) };
            if want != Some(out_ty) || r.dst >= n_regs || (r.flags & A_IMM != 0 && r.flags & B_IMM != 0) {
                return None;
            }
            let input = |k: u64| usize::try_from(k).ok().and_then(|k| inputs.get(k)).copied();
            if (op == Op::LoadX && input(r.imm) != Some(ty)) || (op == Op::LoadI && ty != Dtype::I64) {
                return None;
            }
            let i = Ins { op, ty, out_ty, flags: r.flags, dst: r.dst, src: [r.a, r.b, r.c], imm: r.imm };
            if (0..3).any(|k| i.is_reg(k) && (i.src[k] >= n_regs || i.src[k] == i.dst)) {
                return None;
            }
            let second = i.src[2];
            if op == Op::SinCos && (second >= n_regs || second == i.dst || second == i.src[0]) {
                return None;
            }
            let float_fn = (Op::Sqrt as u32..=Op::SinCos as u32).contains(&(op as u32));
            if r.flags & (EPI_MUL | EPI_ADD) != 0 && (!float_fn || op == Op::SinCos) {
                return None;
            }
            ins.push(i);
        }
        let x_regs: Vec<u32> = ins.iter().filter(|i| i.op == Op::LoadX).map(|i| i.dst).collect();
        // The input is read in place through the LoadX register: nothing else may write it.
        let writes = |i: &Ins, r: u32| i.dst == r || (i.op == Op::SinCos && i.src[2] == r);
        if ins.iter().any(|i| x_regs.iter().any(|&r| i.op != Op::LoadX && writes(i, r))) {
            return None;
        }
        if !every_register_written(&ins, n_regs) {
            return None;
        }
        Some(Program { ins, n_regs, result, inputs, output })
    }
}

/// Whether every register `0..n_regs` is written by an instruction of `ins` (its destination,
/// or the cosine of a `SinCos`): what every compiled program satisfies (a register is
/// allocated only for a result), and what keeps a decoded header from claiming registers
/// that nothing uses. Registers are known to be in range.
fn every_register_written(ins: &[Ins], n_regs: u32) -> bool {
    let n = n_regs as usize;
    if n > ins.len().saturating_mul(2) {
        return false;
    }
    let mut written = vec![false; n];
    for i in ins {
        written[i.dst as usize] = true;
        if i.op == Op::SinCos {
            written[i.src[2] as usize] = true;
        }
    }
    written.iter().all(|&w| w)
}
