//! Trampolines: one plain `fn` per (input type, output type, kernel) that casts a chunk's bytes
//! to typed slices with `bytemuck` and runs the kernel with the call inlined, and the typed
//! function-pointer form for kernels chosen at run time.

use bytemuck::Pod;

use super::{addr_at, in_image, key, offset_of};

/// Materialises a zero-sized `Copy` kernel in a worker.
pub(super) fn conjure<F: Copy>() -> F {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a kernel must not capture anything: pass captured values with `kernel.with(params)` (formerly `map_with`)"
        )
    };
    // SAFETY: F is zero-sized (asserted at compile time), so it has no bytes whose validity
    // could be violated; F is `Copy`, so creating another value is what copying the one the
    // caller passed would do.
    unsafe { std::mem::zeroed::<F>() }
}

fn cast_io<'a, In: Pod, Out: Pod>(input: &'a [u8], output: &'a mut [u8]) -> (&'a [In], &'a mut [Out]) {
    (bytemuck::cast_slice(input), bytemuck::cast_slice_mut(output))
}

/// Runs `f` on the parameter block seen as a `P`, in place when it is aligned (it always is:
/// payloads and segments are 64-byte aligned), so a large block is never copied to the stack.
#[inline(always)]
pub(super) fn with_params<P: Pod, R>(params: &[u8], f: impl FnOnce(&P) -> R) -> R {
    let bytes = &params[..std::mem::size_of::<P>()];
    match bytemuck::try_from_bytes::<P>(bytes) {
        Ok(p) => f(p),
        Err(_) => f(&bytemuck::pod_read_unaligned(bytes)),
    }
}

/// The loop of every element kernel: `output[k] = f(input[k])`, inlined so it vectorises.
#[inline(always)]
fn each<In: Pod, Out: Pod>(input: &[u8], output: &mut [u8], f: impl Fn(In) -> Out) {
    let (i, o) = cast_io::<In, Out>(input, output);
    assert_eq!(i.len(), o.len(), "input and output chunk lengths differ");
    for (o, &x) in o.iter_mut().zip(i) {
        *o = f(x);
    }
}

pub(super) fn elem<In: Pod, Out: Pod, F: Fn(In) -> Out + Copy>(_: &[u8], input: &[u8], output: &mut [u8], _: u64) {
    each(input, output, conjure::<F>())
}

pub(super) fn elem_with<In: Pod, Out: Pod, P: Pod, F: Fn(In, &P) -> Out + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    with_params(params, |p: &P| each(input, output, |x| f(x, p)))
}

pub(super) fn chunk<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out]) + Copy>(
    _: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    let (i, o) = cast_io::<In, Out>(input, output);
    f(i, o)
}

pub(super) fn chunk_with<In: Pod, Out: Pod, P: Pod, F: Fn(&[In], &mut [Out], &P) + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    let (i, o) = cast_io::<In, Out>(input, output);
    with_params(params, |p: &P| f(i, o, p))
}

pub(super) fn indexed<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out], u64) + Copy>(
    _: &[u8],
    input: &[u8],
    output: &mut [u8],
    start: u64,
) {
    let f = conjure::<F>();
    let (i, o) = cast_io::<In, Out>(input, output);
    f(i, o, start)
}

/// The parameter block of a kernel with a table: `params`, padded to 64 bytes (the block
/// itself is 64-byte aligned), then the table's elements.
pub(super) fn table_params<P: Pod, S: Pod>(params: &P, table: &[S]) -> Vec<u8> {
    table_params_bytes::<P, S>(bytemuck::bytes_of(params), table)
}

/// [`table_params`] from the bytes of a `P`.
pub(super) fn table_params_bytes<P: Pod, S: Pod>(params: &[u8], table: &[S]) -> Vec<u8> {
    debug_assert_eq!(params.len(), std::mem::size_of::<P>());
    let off = table_offset::<P>();
    let mut v = Vec::with_capacity(off + std::mem::size_of_val(table));
    v.extend_from_slice(params);
    v.resize(off, 0);
    v.extend_from_slice(bytemuck::cast_slice(table));
    v
}

/// Where the table starts in a parameter block (see [`table_params`]).
const fn table_offset<P>() -> usize {
    std::mem::size_of::<P>().next_multiple_of(64)
}

/// Runs `f` on the parameter block seen as a `P` and a table of `S`, in place when aligned (it
/// always is: payloads and segments are 64-byte aligned), else on a copy.
#[inline(always)]
fn with_table<P: Pod, S: Pod, R>(params: &[u8], f: impl FnOnce(&P, &[S]) -> R) -> R {
    let off = table_offset::<P>();
    let (head, table) = params.split_at(off);
    with_params(head, |p: &P| match bytemuck::try_cast_slice::<u8, S>(table) {
        Ok(t) => f(p, t),
        Err(_) => {
            let copy: Vec<S> = table.chunks_exact(std::mem::size_of::<S>()).map(bytemuck::pod_read_unaligned).collect();
            f(p, &copy)
        }
    })
}

pub(super) fn elem_table<In: Pod, Out: Pod, S: Pod, F: Fn(In, &[S]) -> Out + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    with_table(params, |_: &(), t: &[S]| each(input, output, |x| f(x, t)))
}

pub(super) fn chunk_table<In: Pod, Out: Pod, S: Pod, F: Fn(&[In], &mut [Out], &[S]) + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    let (i, o) = cast_io::<In, Out>(input, output);
    with_table(params, |_: &(), t: &[S]| f(i, o, t))
}

pub(super) fn elem_both<In: Pod, Out: Pod, P: Pod, S: Pod, F: Fn(In, &P, &[S]) -> Out + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    with_table(params, |p: &P, t: &[S]| each(input, output, |x| f(x, p, t)))
}

pub(super) fn chunk_both<In: Pod, Out: Pod, P: Pod, S: Pod, F: Fn(&[In], &mut [Out], &P, &[S]) + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    let (i, o) = cast_io::<In, Out>(input, output);
    with_table(params, |p: &P, t: &[S]| f(i, o, p, t))
}

/// A row kernel: the parameter block holds the row widths (elements in, elements out); the
/// chunk holds whole rows (the pool chunks by row), and `f` runs once per row.
pub(super) fn rows<In: Pod, Out: Pod, F: Fn(&[In], &mut [Out]) + Copy>(
    params: &[u8],
    input: &[u8],
    output: &mut [u8],
    _: u64,
) {
    let f = conjure::<F>();
    let [in_cols, out_cols]: [u64; 2] = bytemuck::pod_read_unaligned(&params[..16]);
    let (i, o) = cast_io::<In, Out>(input, output);
    for (r, w) in i.chunks_exact(in_cols as usize).zip(o.chunks_exact_mut(out_cols as usize)) {
        f(r, w)
    }
}

/// A keyed tag for a function pointer of type `T` at `offset` from the image's anchor: the type
/// is part of the tag, so a pointer cannot be reused as a pointer of another type.
fn fn_tag<T: 'static>(offset: u64) -> u64 {
    key().hash_one((offset, std::any::TypeId::of::<T>(), 0x0046_4e50_5452_u64))
}

/// Reads a function pointer of type `T` and its tag from a parameter block, if the tag matches.
pub(super) fn fn_from_params<T: Copy + 'static>(params: &[u8]) -> Option<T> {
    const { assert!(std::mem::size_of::<T>() == std::mem::size_of::<usize>()) };
    let [offset, tag]: [u64; 2] = bytemuck::pod_read_unaligned(params.get(..16)?);
    if fn_tag::<T>(offset) != tag {
        return None;
    }
    let addr = addr_at(offset);
    if !in_image(addr) {
        return None;
    }
    // SAFETY: the tag is a keyed hash of (offset, TypeId of T) with a key that exists only in
    // process-private memory of the pool's processes; it matches only for an offset produced
    // by `fn_params::<T>` from a real value of type T (a fn pointer, the size of usize as
    // asserted above) in this executable image, which every pool process runs (verified for
    // exec'd workers), so anchor + offset is that function here. The address was checked to be
    // code of this image just above (and the creator refuses pointers into other objects
    // before they travel: `KernelSpec::check_image`).
    Some(unsafe { std::mem::transmute_copy::<usize, T>(&addr) })
}

/// The parameter block of a function-pointer kernel: its offset from the anchor and the tag.
pub(super) fn fn_params<T: 'static>(addr: usize) -> Vec<u8> {
    let offset = offset_of(addr);
    bytemuck::bytes_of(&[offset, fn_tag::<T>(offset)]).to_vec()
}

pub(super) fn elem_ptr<In: Pod, Out: Pod>(params: &[u8], input: &[u8], output: &mut [u8], _: u64) {
    let f = fn_from_params::<fn(In) -> Out>(params).expect("function pointer tag matches, in the executable image");
    each(input, output, f)
}

pub(super) fn chunk_ptr<In: Pod, Out: Pod>(params: &[u8], input: &[u8], output: &mut [u8], _: u64) {
    let f =
        fn_from_params::<fn(&[In], &mut [Out])>(params).expect("function pointer tag matches, in the executable image");
    let (i, o) = cast_io::<In, Out>(input, output);
    f(i, o)
}

/// Runs a `Process::spawn_fn` entry: `fn(A)` (tagged) then the argument's bytes.
pub(super) fn process_entry<A: Pod>(params: &[u8], _: &[u8], _: &mut [u8], _: u64) {
    let f = fn_from_params::<fn(A)>(params).expect("entry function tag matches, in the executable image");
    let arg = params.get(16..16 + std::mem::size_of::<A>()).expect("argument follows the entry");
    f(bytemuck::pod_read_unaligned(arg))
}
