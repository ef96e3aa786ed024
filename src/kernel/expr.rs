//! The expression compiler ([`shmpool_expr`], re-exported here whole) and the glue that runs
//! its programs as kernels: the trampoline a worker calls with a program as its parameter
//! block. Compiled only with the `expr` feature (enabled by `cli`).

pub use shmpool_expr::*;

/// The trampoline body: decodes the program from the parameter block and evaluates it over
/// one chunk (`start` is the flat index of the chunk's first element).
///
/// A trampoline has no error channel but the worker's `catch_unwind`: numpy's runtime error
/// (an integer to a negative integer power) leaves by `resume_unwind` with the error's words
/// as its payload, which the worker reports as the map's `KernelPanicked` message. Unlike
/// `panic!`, `resume_unwind` runs no panic hook: no "panicked at <source location>" line.
pub(crate) fn eval<In: Num, Out: Num>(params: &[u8], input: &[u8], output: &mut [u8], start: u64) {
    let prog = Program::from_bytes(params).expect("the map caller encoded this program (KernelSpec::expr)");
    prog.check_types::<In, Out>().expect("KernelSpec::expr checked the element types");
    if let Err(e) = prog.eval_bytes(input, output, start) {
        std::panic::resume_unwind(Box::new(e.to_string()));
    }
}
