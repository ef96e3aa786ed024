//! The expression kernels of [`KernelSpec`] (feature `expr`): one input, element types known
//! at compile time or at run time, several `.npy` inputs broadcast as numpy does, and the block
//! reductions behind `expr_reduce::reduce_npy`. They compile nothing themselves: `expr` does.

use super::{expr, KernelSpec, FILLS};
use crate::dtype::Dtype;
use crate::error::{Error, Result};

impl KernelSpec {
    /// An expression kernel reading `In` and writing `Out` elements (feature `expr`): `In` must store the
    /// program's input dtype; the result is cast to `Out` ([`expr::Program::astype`]) when it
    /// is not the program's output dtype. `u8` reads and writes `bool`, [`half::f16`] float16.
    ///
    /// # Errors
    ///
    /// [`Error::Expr`] ([`expr::Error::TypeMismatch`]) when `In` is not the type the program
    /// was compiled for, ([`expr::Error::InputCount`]) when it reads more than one input.
    pub fn expr<In: expr::Num, Out: expr::Num>(program: &expr::Program) -> Result<KernelSpec> {
        let given = program.input_dtypes().len();
        if given != 1 {
            // A chunk kernel reads one input: several named inputs need another engine path.
            return Err(expr::Error::InputCount { expected: 1, given }.into());
        }
        let program = if Out::stores(program.output_dtype()) { program.clone() } else { program.astype(Out::DTYPE) };
        program.check_types::<In, Out>()?;
        // The evaluator writes every element of its output (numpy's `out = f(x)`).
        Ok(Self::new::<In, Out>(expr::eval::<In, Out>, program.to_bytes(), FILLS))
    }

    /// An expression kernel (feature `expr`) for element types chosen at run time: reads `input` (the type the
    /// program was compiled for) and writes `output`, casting the result as numpy's `astype`
    /// when `output` is not the program's output dtype.
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when `input` is not the program's input dtype.
    pub fn expr_for(program: &expr::Program, input: Dtype, output: Dtype) -> Result<KernelSpec> {
        if input != program.input_dtype() {
            return Err(Error::TypeMismatch {
                kernel: format!("an expression compiled for {} input", program.input_dtype()),
                data: input.to_string(),
            });
        }
        let program = program.astype(output);
        macro_rules! out {
            ($i:ty) => {
                match output {
                    Dtype::Bool | Dtype::U8 => Self::expr::<$i, u8>(&program),
                    Dtype::I8 => Self::expr::<$i, i8>(&program),
                    Dtype::I16 => Self::expr::<$i, i16>(&program),
                    Dtype::I32 => Self::expr::<$i, i32>(&program),
                    Dtype::I64 => Self::expr::<$i, i64>(&program),
                    Dtype::U16 => Self::expr::<$i, u16>(&program),
                    Dtype::U32 => Self::expr::<$i, u32>(&program),
                    Dtype::U64 => Self::expr::<$i, u64>(&program),
                    Dtype::F16 => Self::expr::<$i, half::f16>(&program),
                    Dtype::F32 => Self::expr::<$i, f32>(&program),
                    Dtype::F64 => Self::expr::<$i, f64>(&program),
                }
            };
        }
        let mut spec = match input {
            Dtype::Bool | Dtype::U8 => out!(u8),
            Dtype::I8 => out!(i8),
            Dtype::I16 => out!(i16),
            Dtype::I32 => out!(i32),
            Dtype::I64 => out!(i64),
            Dtype::U16 => out!(u16),
            Dtype::U32 => out!(u32),
            Dtype::U64 => out!(u64),
            Dtype::F16 => out!(half::f16),
            Dtype::F32 => out!(f32),
            Dtype::F64 => out!(f64),
        }?;
        // `u8` stores bool: the spec records the dtypes the program reads and writes.
        spec.input.dtype = Some(input);
        spec.output.dtype = Some(output);
        spec.check_dtypes(input, output)?;
        Ok(spec)
    }

    /// An expression kernel over several `.npy` inputs (feature `expr`), broadcast as numpy
    /// does: map it with [`crate::Pool::map_into`] from `inputs[main]`, which must have the
    /// broadcast shape, into an output of that shape and of dtype `output` (the result is cast
    /// as numpy's `astype`). Input `k` is `inputs[k] = (path, array)`, `program` compiled with
    /// [`expr::Program::compile_inputs`] for their dtypes. Every worker maps each file itself,
    /// read-only, and checks it is the very file (device and inode) that was opened here.
    ///
    /// # Safety
    ///
    /// Every array of `inputs` must outlive every map with this kernel: the workers map the
    /// very files the arrays map (checked by device and inode), and only the promise made to
    /// [`crate::NpyArray::open`] (nothing truncates or modifies the file while the array
    /// exists) keeps their mappings valid and immutable; the kernel does not borrow them.
    /// (`shmpool::expr_reduce::reduce_npy` borrows its arrays for its whole run and is safe.)
    ///
    /// # Errors
    ///
    /// [`Error::TypeMismatch`] when the inputs are not the program's, in number or dtype;
    /// [`Error::Expr`] ([`expr::Error::Broadcast`]) for shapes numpy cannot broadcast;
    /// [`Error::InvalidOption`] when `inputs[main]` does not have the broadcast shape;
    /// [`Error::File`] when a path cannot be resolved.
    pub unsafe fn expr_files(
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
        main: usize,
        output: Dtype,
    ) -> Result<KernelSpec> {
        let (files, out_shape) = Self::file_inputs(program, inputs, constants)?;
        if inputs.get(main).is_none_or(|(_, a)| a.shape() != out_shape.as_slice()) {
            return Err(Error::InvalidOption {
                option: "main input",
                value: main as u64,
                allowed: "an input of the broadcast shape",
            });
        }
        let dtypes = program.input_dtypes().to_vec();
        let program = program.astype(output);
        let params = expr::encode_files(&program.to_bytes(), &files);
        let input = dtypes[main];
        macro_rules! by_size {
            ($size:expr, $T:ident => $body:expr) => {
                match $size {
                    1 => {
                        type $T = u8;
                        $body
                    }
                    2 => {
                        type $T = u16;
                        $body
                    }
                    4 => {
                        type $T = u32;
                        $body
                    }
                    _ => {
                        type $T = u64;
                        $body
                    }
                }
            };
        }
        let mut spec = by_size!(input.size(), I => by_size!(output.size(), O => Self::new::<I, O>(expr::eval_files, params.clone(), FILLS)));
        spec.input.dtype = Some(input);
        spec.output.dtype = Some(output);
        Ok(spec)
    }

    /// What workers need to map the inputs of a several-input expression themselves, and the
    /// broadcast shape.
    pub(super) fn file_inputs(
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
    ) -> Result<(Vec<expr::FileInput>, Vec<u64>)> {
        let dtypes: Vec<Dtype> =
            inputs.iter().map(|(_, a)| a.dtype()).chain(constants.iter().map(expr::Value::dtype)).collect();
        if dtypes != program.input_dtypes() {
            let names = |d: &[Dtype]| d.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
            return Err(Error::TypeMismatch {
                kernel: format!("an expression compiled for ({})", names(program.input_dtypes())),
                data: format!("({})", names(&dtypes)),
            });
        }
        let mut shapes: Vec<&[u64]> = inputs.iter().map(|(_, a)| a.shape()).collect();
        shapes.extend(constants.iter().map(|_| &[][..]));
        let out_shape = expr::broadcast_shapes(&shapes)?;
        let mut files = Vec::with_capacity(inputs.len());
        for (path, a) in inputs {
            let seg = a.segment();
            let (dev, ino) = seg.identity().unwrap_or((0, 0));
            let data_off = seg.file_area().map_or(0, |f| f.offset as u64);
            let path = path.canonicalize().map_err(|e| Error::File {
                op: "resolve",
                path: path.display().to_string(),
                source: e,
            })?;
            files.push(expr::FileInput { path, dev, ino, data_off, shape: a.shape().to_vec(), data: Vec::new() });
        }
        for c in constants {
            let data = c.to_le_bytes();
            files.push(expr::FileInput {
                path: Default::default(),
                dev: 0,
                ino: 0,
                data_off: 0,
                shape: Vec::new(),
                data,
            });
        }
        Ok((files, out_shape))
    }

    /// A reduction kernel: maps block numbers (`u64`) to the partial results of `start`
    /// (a fresh reducer, or one after its first pass) over `program`'s values, block by block.
    /// As [`KernelSpec::expr_files`], the arrays must outlive every map with it: the caller
    /// (`shmpool::expr_reduce::reduce_npy`) borrows them for as long as the kernel exists.
    pub(crate) fn reduce_blocks(
        start: &expr::Reducer,
        program: &expr::Program,
        inputs: &[(&std::path::Path, &crate::NpyArray)],
        constants: &[expr::Value],
    ) -> Result<(KernelSpec, u64)> {
        let (files, out_shape) = Self::file_inputs(program, inputs, constants)?;
        let total: u64 = out_shape.iter().product();
        let params = expr::encode_reduce(start, total, &program.to_bytes(), &files);
        Ok((Self::new::<u64, [u8; expr::REDUCER_BYTES]>(expr::eval_reduce, params, FILLS), total))
    }
}
