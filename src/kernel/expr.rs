//! The expression compiler ([`shmpool_expr`], re-exported here whole) and the glue that runs
//! its programs as kernels: the trampoline a worker calls with a program as its parameter
//! block. Compiled only with the `expr` feature (enabled by `cli`).

pub use shmpool_expr::*;

/// The trampoline body: decodes the program from the parameter block and evaluates it over
/// one chunk (`start` is the flat index of the chunk's first element).
///
/// A trampoline has no error channel but the worker's `catch_unwind`: numpy's runtime error
/// (an integer to a negative integer power) leaves by [`super::Failure::raise`] as a code,
/// which the worker publishes as such and the map caller turns back into [`crate::Error::Expr`]
/// in every verb, never by reading a message.
pub(crate) fn eval<In: Num, Out: Num>(params: &[u8], input: &[u8], output: &mut [u8], start: u64) {
    let prog = Program::from_bytes(params).expect("the map caller encoded this program (KernelSpec::expr)");
    prog.check_types::<In, Out>().expect("KernelSpec::expr checked the element types");
    if let Err(e) = prog.eval_bytes(input, output, start) {
        super::Failure::raise(&e);
    }
}

/// What a worker needs to map one input of a several-input expression itself: the file, the
/// identity it must still have, where its data lives and its shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileInput {
    pub path: std::path::PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub data_off: u64,
    pub shape: Vec<u64>,
    /// The elements themselves, for a constant (a reduction's value, 0-d) that has no file.
    pub data: Vec<u8>,
}

/// The parameter block of a several-input expression kernel: the program, then the inputs.
pub(crate) fn encode_files(program: &[u8], inputs: &[FileInput]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut v = Vec::new();
    let mut put = |x: u64| v.extend_from_slice(&x.to_le_bytes());
    put(program.len() as u64);
    put(inputs.len() as u64);
    for f in inputs {
        put(f.dev);
        put(f.ino);
        put(f.data_off);
        put(f.shape.len() as u64);
        f.shape.iter().for_each(|&d| put(d));
        put(f.path.as_os_str().len() as u64);
        put(f.data.len() as u64);
    }
    v.extend_from_slice(program);
    for f in inputs {
        v.extend_from_slice(f.path.as_os_str().as_bytes());
        v.extend_from_slice(&f.data);
    }
    v
}

/// Decodes [`encode_files`]'s block: the program's bytes and the inputs; `None` if malformed.
fn decode(b: &[u8]) -> Option<(&[u8], Vec<FileInput>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut at = 0usize;
    let mut get = || -> Option<u64> {
        let w = b.get(at..at + 8)?;
        at += 8;
        Some(u64::from_le_bytes(w.try_into().ok()?))
    };
    let prog_len = usize::try_from(get()?).ok()?;
    let n = usize::try_from(get()?).ok().filter(|&n| n <= MAX_INPUTS)?;
    let mut inputs = Vec::with_capacity(n);
    let mut lens = Vec::with_capacity(n);
    for _ in 0..n {
        let (dev, ino, data_off) = (get()?, get()?, get()?);
        let ndim = usize::try_from(get()?).ok().filter(|&d| d <= 64)?;
        let shape = (0..ndim).map(|_| get()).collect::<Option<Vec<u64>>>()?;
        lens.push((usize::try_from(get()?).ok()?, usize::try_from(get()?).ok()?));
        inputs.push(FileInput { path: Default::default(), dev, ino, data_off, shape, data: Vec::new() });
    }
    let program = b.get(at..at.checked_add(prog_len)?)?;
    at += prog_len;
    for (f, (len, data)) in inputs.iter_mut().zip(lens) {
        let p = b.get(at..at.checked_add(len)?)?;
        at += len;
        f.path = std::ffi::OsStr::from_bytes(p).into();
        f.data = b.get(at..at.checked_add(data)?)?.to_vec();
        at += data;
    }
    Some((program, inputs))
}

/// A worker's read-only mappings of a several-input expression's files, by identity, for one
/// chunk: mapped when the chunk starts and unmapped when it ends, so a worker never keeps a
/// file mapped once the map that named it is done (a removed input's space is given back, and
/// a file rewritten in place after its array was dropped is mapped afresh, at its new size).
/// Mapping costs an `open`, an `fstat` and an `mmap` per file and chunk; the pages are dropped
/// chunk by chunk anyway ([`release_pages`]).
struct Mapped(Vec<((u64, u64), memmap2::Mmap)>);

impl Mapped {
    /// Maps every file of `files` (those without constant data) read-only in this worker.
    fn new(files: &[FileInput]) -> Mapped {
        let mut maps: Vec<((u64, u64), memmap2::Mmap)> = Vec::with_capacity(files.len());
        for f in files.iter().filter(|f| f.data.is_empty()) {
            let key = (f.dev, f.ino);
            if maps.iter().any(|(k, _)| *k == key) {
                continue;
            }
            let fail = |what: String| -> ! { std::panic::resume_unwind(Box::new(what)) };
            let file =
                std::fs::File::open(&f.path).unwrap_or_else(|e| fail(format!("cannot open {}: {e}", f.path.display())));
            if !nix::sys::stat::fstat(&file).is_ok_and(|st| (st.st_dev, st.st_ino) == key) {
                fail(format!("the input {} was replaced during the map", f.path.display()));
            }
            // SAFETY: the identity check above proves this is the file an `NpyArray` of the map
            // caller maps, and that array outlives the map (`KernelSpec::expr_files`'s
            // `# Safety`; `expr_reduce::reduce_npy` borrows its arrays); whoever opened it promised
            // (`NpyArray::open`'s `# Safety`) that nothing truncates or modifies the file while
            // it exists, so this mapping stays valid and its bytes immutable during the chunk
            // (it is dropped at the chunk's end, [`Mapped`]).
            let map = unsafe { memmap2::Mmap::map(&file) }
                .unwrap_or_else(|e| fail(format!("cannot map {}: {e}", f.path.display())));
            maps.push((key, map));
        }
        Mapped(maps)
    }

    /// The mapping of `f`'s file (mapped by [`Mapped::new`] from the same files).
    fn of(&self, f: &FileInput) -> &memmap2::Mmap {
        &self.0.iter().find(|(k, _)| *k == (f.dev, f.ino)).expect("mapped by Mapped::new").1
    }
}

/// The trampoline of a several-input expression: evaluates the program over the output
/// chunk's flat indices, reading every input from the worker's own read-only mapping of its
/// file (broadcast as numpy does). The map's own input chunk (one of the inputs, of the
/// output's shape) is not used: its elements are read through the mapping too.
pub(crate) fn eval_files(params: &[u8], _input: &[u8], output: &mut [u8], start: u64) {
    let (program, files) = decode(params).expect("the map caller encoded these parameters (KernelSpec::expr_files)");
    let prog = Program::from_bytes(program).expect("the map caller encoded this program (KernelSpec::expr_files)");
    if let Err(e) = evaluate(&prog, &files, &Mapped::new(&files), output, start) {
        super::Failure::raise(&e);
    }
}

/// Evaluates `prog` over the output flat indices `start..` (as many as `output` holds) from
/// the worker's mappings of `files`, then gives back the pages of the inputs of the output's
/// shape (streaming through files larger than RAM, as the engine does for its own input).
fn evaluate(prog: &Program, files: &[FileInput], maps: &Mapped, output: &mut [u8], start: u64) -> Result<()> {
    let n = (output.len() / prog.output_dtype().size()) as u64;
    let mut ops: Vec<(&[u8], &[u64])> = Vec::with_capacity(files.len());
    for (f, d) in files.iter().zip(prog.input_dtypes()) {
        if !f.data.is_empty() {
            ops.push((&f.data[..], &f.shape[..]));
            continue;
        }
        let len = f.shape.iter().product::<u64>() as usize * d.size();
        let off = f.data_off as usize;
        let Some(data) = maps.of(f).get(off..off + len) else {
            std::panic::resume_unwind(Box::new(format!("the input {} shrank during the map", f.path.display())));
        };
        ops.push((data, &f.shape[..]));
    }
    let r = prog.eval_broadcast(&ops, output, start..start + n);
    drop(ops);
    let shapes: Vec<&[u64]> = files.iter().map(|f| &f.shape[..]).collect();
    let out_shape = broadcast_shapes(&shapes).unwrap_or_default();
    for (f, d) in files.iter().zip(prog.input_dtypes()).filter(|(f, _)| f.shape == out_shape && f.data.is_empty()) {
        let from = f.data_off as usize + start as usize * d.size();
        release_pages(maps.of(f), from, from + n as usize * d.size());
    }
    r
}

/// Drops this process's page-table entries for bytes `from..to` of a file mapping it has read
/// (whole pages; the bytes stay in the page cache), so that a worker's resident memory stays
/// flat however much of a file it reads. No slice of the range may be alive.
fn release_pages(map: &memmap2::Mmap, from: usize, to: usize) {
    let page = 4096;
    let (lo, hi) = ((from / page) * page, to.next_multiple_of(page).min(map.len()));
    if hi > lo {
        // SAFETY: [lo, hi) lies inside this read-only MAP_SHARED file mapping (clamped to its
        // length); DONTNEED only drops this process's page-table entries, the bytes stay in the
        // page cache and read back the same, and the callers hold no slice of the range.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo) };
    }
}

/// Bytes of a mapped input a worker reads before it drops their page-table entries
/// ([`release_pages`]): one `madvise` per 2 MiB, not one per block.
const RELEASE_BYTES: usize = 2 << 20;

/// Pages of a mapping read but not yet released (`lo..hi`), released 2 MiB at a time.
struct Pending<'a>(&'a memmap2::Mmap, Option<(usize, usize)>);

impl Pending<'_> {
    /// Records that bytes `from..to` were read.
    fn read(&mut self, from: usize, to: usize) {
        self.1 = match self.1 {
            Some((lo, hi)) if hi == from && to - lo < RELEASE_BYTES => Some((lo, to)),
            Some((lo, hi)) if hi == from => {
                release_pages(self.0, lo, to);
                None
            }
            Some((lo, hi)) => {
                release_pages(self.0, lo, hi);
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some((lo, hi)) = self.1 {
            release_pages(self.0, lo, hi);
        }
    }
}

/// How a reduction's `total` values are cut: blocks of `len` values (one partial result
/// each), each read in pieces of at most [`REDUCE_BLOCK`] values.
#[derive(Clone, Copy)]
struct Blocks {
    total: u64,
    len: u64,
}

impl Blocks {
    /// The flat index ranges of the pieces of block `id`, in order.
    fn pieces(self, id: &[u8]) -> impl Iterator<Item = std::ops::Range<u64>> {
        let first = u64::from_le_bytes(id.try_into().expect("8 bytes")).saturating_mul(self.len);
        let end = first.saturating_add(self.len).min(self.total);
        (first..end).step_by(REDUCE_BLOCK as usize).map(move |lo| lo..(lo + REDUCE_BLOCK).min(end))
    }
}

/// The blocks of a reduction whose values are a mapped input's own bytes (`x` alone, no
/// conversion): each piece is reduced where it lies in the worker's mapping, never evaluated
/// into a buffer first (the reducer's float sums prefetch ahead of their adds). Measured,
/// `mean(x)` over 100M float64, -j 2: 0.18 s evaluating each block into a buffer, 0.09 s
/// copying it there, 0.07 s in place. Returns false, having done nothing, when the program
/// computes anything.
fn reduce_plain(
    prog: &Program,
    files: &[FileInput],
    blocks: Blocks,
    start: &Reducer,
    maps: &Mapped,
    io: Io<'_>,
) -> bool {
    let Some(file) = prog.plain_input().and_then(|k| files.get(k)) else { return false };
    if !file.data.is_empty() || file.shape.iter().product::<u64>() != blocks.total {
        return false;
    }
    let map = maps.of(file);
    let size = prog.output_dtype().size();
    let mut pending = Pending(map, None);
    for (id, out) in io.0.chunks_exact(8).zip(io.1.chunks_exact_mut(REDUCER_BYTES)) {
        let mut r = start.clone();
        for piece in blocks.pieces(id) {
            let from = file.data_off as usize + piece.start as usize * size;
            let to = from + (piece.end - piece.start) as usize * size;
            let Some(data) = map.get(from..to) else {
                std::panic::resume_unwind(Box::new(format!("the input {} shrank during the map", file.path.display())));
            };
            if let Err(e) = r.update(data, piece.start) {
                super::Failure::raise(&e);
            }
            pending.read(from, to);
        }
        out.copy_from_slice(&r.to_bytes());
    }
    true
}

/// A reduction chunk's input (block numbers) and output (partial results).
type Io<'a> = (&'a [u8], &'a mut [u8]);

/// Values per piece of a reduction's block (a block of a sequential reduction, float `prod`,
/// is all the values: see [`reduce_block_len`]).
pub(crate) const REDUCE_BLOCK: u64 = 1 << 13;

/// Values per block of a reduction, each block's partial result one element of the map:
/// [`REDUCE_BLOCK`], or all `total` values in one block when the reduction's partial results
/// cannot be joined as numpy computes it ([`Reducer::sequential`]: numpy's float product
/// rounds after every value, in order).
pub(crate) fn reduce_block_len(r: &Reducer, total: u64) -> u64 {
    if r.sequential() {
        total.max(1)
    } else {
        REDUCE_BLOCK
    }
}

/// The parameter block of a reduction kernel: the starting reducer, the number of values,
/// the values per block, then the expression and its files as [`encode_files`].
pub(crate) fn encode_reduce(start: &Reducer, total: u64, program: &[u8], inputs: &[FileInput]) -> Vec<u8> {
    let mut v = start.to_bytes().to_vec();
    v.extend_from_slice(&total.to_le_bytes());
    v.extend_from_slice(&reduce_block_len(start, total).to_le_bytes());
    v.extend_from_slice(&encode_files(program, inputs));
    v
}

/// The trampoline of a reduction: the input elements are block numbers (`u64`), each output
/// element the partial result ([`Reducer::to_bytes`]) of the expression's values over that
/// block of flat indices ([`reduce_block_len`]), computed from the worker's own mappings.
pub(crate) fn eval_reduce(params: &[u8], input: &[u8], output: &mut [u8], _start: u64) {
    let start = Reducer::from_bytes(&params[..REDUCER_BYTES]).expect("the map caller encoded the reducer");
    let word = |k: usize| {
        let at = REDUCER_BYTES + 8 * k;
        u64::from_le_bytes(params[at..at + 8].try_into().expect("8 bytes"))
    };
    let blocks = Blocks { total: word(0), len: word(1).max(1) };
    let (program, files) = decode(&params[REDUCER_BYTES + 16..]).expect("the map caller encoded these parameters");
    let prog = Program::from_bytes(program).expect("the map caller encoded this program");
    let osz = prog.output_dtype().size();
    let maps = Mapped::new(&files);
    if reduce_plain(&prog, &files, blocks, &start, &maps, (input, &mut *output)) {
        return;
    }
    let mut values = Vec::new();
    for (id, out) in input.chunks_exact(8).zip(output.chunks_exact_mut(REDUCER_BYTES)) {
        let mut r = start.clone();
        for piece in blocks.pieces(id) {
            values.resize((piece.end - piece.start) as usize * osz, 0u8);
            let done =
                evaluate(&prog, &files, &maps, &mut values, piece.start).and_then(|()| r.update(&values, piece.start));
            if let Err(e) = done {
                super::Failure::raise(&e);
            }
        }
        out.copy_from_slice(&r.to_bytes());
    }
}

/// Result elements per unit of an axis reduction's map.
pub(crate) const AXIS_BLOCK: u64 = 512;
/// Bytes per unit of an axis reduction's map: [`AXIS_BLOCK`] result elements of up to 8
/// bytes, then 8 bytes whose last is the block's warning code ([`warning_code`]).
pub(crate) const AXIS_UNIT: usize = 8 * AXIS_BLOCK as usize + 8;

impl super::KernelSpec {
    /// An axis reduction kernel: maps block numbers (`u64`) to units of [`AXIS_UNIT`] bytes,
    /// each the values of [`AXIS_BLOCK`] elements of the result of `r` over `program`'s values.
    /// As [`super::KernelSpec::expr_files`], the arrays must outlive every map with it: the
    /// caller (`shmpool::expr_reduce::reduce_npy_axis`) borrows them for as long as the kernel exists.
    pub(crate) fn reduce_axis_blocks(
        r: &AxisReduction,
        program: &Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[Value],
    ) -> crate::Result<super::KernelSpec> {
        let (files, _) = Self::file_inputs(program, inputs, constants)?;
        let mut params: Vec<u8> = bytemuck::cast_slice(&r.to_words()).to_vec();
        params.extend_from_slice(&encode_files(&program.to_bytes(), &files));
        Ok(Self::new::<u64, [u8; AXIS_UNIT]>(eval_axis, params, super::FILLS))
    }
}

/// The trampoline of an axis reduction: the input elements are block numbers, each output
/// unit the values of that block of the result's elements, computed from the worker's own
/// mappings of the files (every element reduced whole, in order along the axis).
pub(crate) fn eval_axis(params: &[u8], input: &[u8], output: &mut [u8], _start: u64) {
    let head = AXIS_WORDS * 8;
    let words: [u64; AXIS_WORDS] = bytemuck::pod_read_unaligned(&params[..head]);
    let r = AxisReduction::from_words(&words).expect("the map caller encoded the reduction");
    let (program, files) = decode(&params[head..]).expect("the map caller encoded these parameters");
    let prog = Program::from_bytes(program).expect("the map caller encoded this program");
    let rsz = r.result_dtype().size();
    let maps = Mapped::new(&files);
    for (id, out) in input.chunks_exact(8).zip(output.chunks_exact_mut(AXIS_UNIT)) {
        let block = u64::from_le_bytes(id.try_into().expect("8 bytes"));
        let first = block * AXIS_BLOCK;
        let n = AXIS_BLOCK.min(r.result_len().saturating_sub(first));
        let mut values = |flat: std::ops::Range<u64>, buf: &mut [u8]| evaluate(&prog, &files, &maps, buf, flat.start);
        match r.reduce_range(first..first + n, &mut values, &mut out[..n as usize * rsz]) {
            Ok(w) => out[AXIS_UNIT - 1] = warning_code(w),
            Err(e) => super::Failure::raise(&e),
        }
    }
}

impl super::KernelSpec {
    /// An expression kernel over several `.npy` inputs broadcast to a shape that none of them
    /// has (`(n, 1)` with `(1, m)`; feature `expr`): map it with [`crate::Pool::map_into`] from
    /// the row numbers `0..total / row` (`u64`) into an output of the broadcast shape and of
    /// dtype `output`, each row being `row` consecutive output elements (flat indices
    /// `id * row ..`); `row` must divide the output's number of elements. Inputs as
    /// [`super::KernelSpec::expr_files`]; every input is read in place from the workers' own
    /// mappings, and the output written in place.
    ///
    /// # Safety
    ///
    /// As [`super::KernelSpec::expr_files`]: every array of `inputs` must outlive every map
    /// with this kernel.
    ///
    /// # Errors
    ///
    /// As [`super::KernelSpec::expr_files`]; [`crate::Error::InvalidOption`] when `row` is 0,
    /// does not divide the broadcast shape's number of elements, or a row passes 4 GiB.
    pub unsafe fn expr_files_rows(
        program: &Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[Value],
        row: u64,
        output: Dtype,
    ) -> crate::Result<super::KernelSpec> {
        let (files, out_shape) = Self::file_inputs(program, inputs, constants)?;
        let total: u64 = out_shape.iter().product();
        let bytes = row.checked_mul(output.size() as u64).filter(|&b| b <= u64::from(u32::MAX));
        if row == 0 || total % row != 0 || bytes.is_none() {
            return Err(crate::Error::InvalidOption {
                option: "row length",
                value: row,
                allowed: "a divisor of the output's number of elements, at most 4 GiB per row",
            });
        }
        let program = program.astype(output);
        let mut params = row.to_le_bytes().to_vec();
        params.extend_from_slice(&encode_files(&program.to_bytes(), &files));
        let mut spec = match output.size() {
            1 => Self::new::<u64, u8>(eval_rows, params, super::FILLS),
            2 => Self::new::<u64, u16>(eval_rows, params, super::FILLS),
            4 => Self::new::<u64, u32>(eval_rows, params, super::FILLS),
            _ => Self::new::<u64, u64>(eval_rows, params, super::FILLS),
        };
        spec.out_size = bytes.expect("checked above") as usize;
        spec.output.dtype = Some(output);
        Ok(spec)
    }
}

/// The trampoline of [`super::KernelSpec::expr_files_rows`]: the input elements are row
/// numbers (consecutive within a chunk), the output the rows' elements.
pub(crate) fn eval_rows(params: &[u8], input: &[u8], output: &mut [u8], _start: u64) {
    let row = u64::from_le_bytes(params[..8].try_into().expect("the map caller encoded the row length"));
    let (program, files) = decode(&params[8..]).expect("the map caller encoded these parameters");
    let prog = Program::from_bytes(program).expect("the map caller encoded this program");
    let Some(first) = input.get(..8) else { return };
    let start = u64::from_le_bytes(first.try_into().expect("8 bytes")) * row;
    if let Err(e) = evaluate(&prog, &files, &Mapped::new(&files), output, start) {
        super::Failure::raise(&e);
    }
}
