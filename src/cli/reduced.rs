//! The reductions an expression calls (`mean(x)`, `sum(x, axis=1)`), computed first by the
//! pool, and the expression around them: a whole-array reduction becomes a 0-d constant of
//! the outer program, an axis reduction an array read like an input (written as a `.npy` in
//! a temporary directory, so that workers map it as they map the user's files).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};

use shmpool::kernel::expr::parse::{error_in_sized, error_in_source, reads_index, ReductionCall, REDUCTION_PREFIX};
use shmpool::kernel::expr::{array_repr, broadcast_shapes, Program, Value};
use shmpool::{AxisResult, Dtype, NpyArray, NpyOutput, Pool};

use super::input::open_input;
use super::Failure;

/// The value of one reduction call.
pub(super) enum Reduced {
    /// A whole-array reduction, or an axis reduction of a 1-d array (numpy's scalar).
    Scalar(Value),
    /// An axis reduction of an n-d array.
    Array(AxisResult),
}

/// The values of the reductions taken out of an expression (`mean(x)` in `x - mean(x)`),
/// each computed in parallel by `pool` over the inputs its inner expression uses.
pub(super) fn reduce_inner(
    pool: &Pool,
    calls: &[ReductionCall],
    names: &[String],
    paths: &[&Path],
    arrays: &[NpyArray],
) -> Result<Vec<Reduced>, Failure> {
    let mut values = Vec::with_capacity(calls.len());
    for call in calls {
        let used = Program::variables(&call.inner)?;
        let idx: Vec<usize> = (0..names.len()).filter(|&k| used.contains(&names[k])).collect();
        let typed: Vec<(&str, Dtype)> = idx.iter().map(|&k| (names[k].as_str(), arrays[k].dtype())).collect();
        let program = Program::compile_inputs(&call.inner, &typed)?;
        let files: Vec<(&Path, &NpyArray)> = idx.iter().map(|&k| (paths[k], &arrays[k])).collect();
        let (value, warning) = match call.axis {
            None => {
                let (v, w) = shmpool::expr_reduce::reduce_npy(pool, &program, &files, &[], call.reduction)?;
                (Reduced::Scalar(v), w)
            }
            Some(axis) => {
                let r = shmpool::expr_reduce::reduce_npy_axis(pool, &program, &files, &[], call.reduction, axis)?;
                let w = r.warning;
                match r.shape.is_empty() {
                    true => (Reduced::Scalar(Value::from_le_bytes(r.dtype, &r.bytes).expect("one element")), w),
                    false => (Reduced::Array(r), w),
                }
            }
        };
        if let Some(w) = warning {
            eprintln!("RuntimeWarning: {w}");
        }
        values.push(value);
    }
    Ok(values)
}

/// An expression with its reductions taken out, compiled over what it still reads: the
/// user's inputs `used` (indices), then the reduced arrays (files in a temporary directory),
/// then the reduced scalars.
pub(super) struct Outer {
    pub program: Program,
    pub used: Vec<usize>,
    /// The reduced arrays, in memory and as mapped files (the files drop before the directory).
    arrays: Vec<AxisResult>,
    temps: Vec<(PathBuf, NpyArray)>,
    pub values: Vec<Value>,
    _dir: Option<tempfile::TempDir>,
}

impl Outer {
    /// Compiles `rewritten` (names `__rK` for the reductions, made from `sized`, the user's
    /// `source` with its `size(NAME)` replaced) over the inputs it reads; its errors quote
    /// `source`. An expression that reads nothing (`size(x) * 1.5`) is numpy's 0-d array of
    /// its value: it reads a 0-d True it does not depend on.
    pub fn new(
        (source, sized, rewritten): (&str, &str, &str),
        names: &[String],
        inputs: &[NpyArray],
        reduced: Vec<Reduced>,
    ) -> Result<Outer, Failure> {
        let used_names = Program::variables(rewritten)?;
        let used: Vec<usize> = (0..names.len()).filter(|&k| used_names.contains(&names[k])).collect();
        let mut typed: Vec<(String, Dtype)> = used.iter().map(|&k| (names[k].clone(), inputs[k].dtype())).collect();
        let (mut arrays, mut scalars, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (k, r) in reduced.into_iter().enumerate() {
            let name = format!("{REDUCTION_PREFIX}{k}");
            match r {
                Reduced::Array(a) => {
                    typed.push((name, a.dtype));
                    arrays.push(a);
                }
                Reduced::Scalar(v) => {
                    scalars.push((name, v.dtype()));
                    values.push(v);
                }
            }
        }
        let sizes: Vec<(&str, u64)> = names.iter().zip(inputs).map(|(n, a)| (n.as_str(), a.len() as u64)).collect();
        let in_source = |e| error_in_sized(error_in_source(e, sized), source, &sizes);
        let mut rewritten = rewritten.to_string();
        let mut used = used;
        if used.is_empty() && !names.is_empty() && reads_index(&rewritten) {
            // `i + sum(x)`: `i` indexes the inputs' broadcast shape, as `i + 1` does over a bare
            // path: the program reads every input, through a `where` whose branches are equal.
            let cond: Vec<String> = names.iter().map(|n| format!("({n} == {n})")).collect();
            rewritten = format!("where({}, ({rewritten}), ({rewritten}))", cond.join(" | "));
            used = (0..names.len()).collect();
            typed.splice(0..0, names.iter().cloned().zip(inputs.iter().map(NpyArray::dtype)));
        }
        if typed.is_empty() && scalars.is_empty() {
            // Its errors first, quoting the user's text (no input is needed to find them).
            Program::compile_for(&rewritten, Dtype::Bool).map_err(in_source)?;
            // `where` of a condition and two Python scalars is numpy's array of the scalar.
            let name = format!("{REDUCTION_PREFIX}{}", values.len());
            rewritten = format!("where({name}, ({rewritten}), ({rewritten}))");
            scalars.push((name, Dtype::Bool));
            values.push(Value::Bool(true));
        }
        typed.extend(scalars);
        let typed: Vec<(&str, Dtype)> = typed.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let program = Program::compile_inputs(&rewritten, &typed).map_err(in_source)?;
        let dir = if arrays.is_empty() { None } else { Some(temp_dir()?) };
        let mut temps = Vec::with_capacity(arrays.len());
        for (k, a) in arrays.iter().enumerate() {
            let path = dir.as_ref().expect("made for arrays").path().join(format!("reduced{k}.npy"));
            write_array(&path, a.dtype, &a.shape, &a.bytes)?;
            let array = open_input(&path)?;
            temps.push((path, array));
        }
        Ok(Outer { program, used, arrays, temps, values, _dir: dir })
    }

    /// The files the program reads, in its input order: the user's inputs it uses, then the
    /// reduced arrays.
    pub fn files<'a>(&'a self, paths: &[&'a Path], inputs: &'a [NpyArray]) -> Vec<(&'a Path, &'a NpyArray)> {
        let user = self.used.iter().map(|&k| (paths[k], &inputs[k]));
        user.chain(self.temps.iter().map(|(p, a)| (p.as_path(), a))).collect()
    }

    /// Evaluates the program here, when it reads no input of the user's (an expression of
    /// reductions' values): numpy's dtype, the broadcast shape and the elements.
    pub fn evaluate(&self) -> Result<(Dtype, Vec<u64>, Vec<u8>), Failure> {
        let scalars: Vec<Vec<u8>> = self.values.iter().map(Value::to_le_bytes).collect();
        let mut ops: Vec<(&[u8], &[u64])> = self.arrays.iter().map(|a| (&a.bytes[..], &a.shape[..])).collect();
        ops.extend(scalars.iter().map(|b| (&b[..], &[][..])));
        let shape = broadcast_shapes(&ops.iter().map(|&(_, s)| s).collect::<Vec<_>>())?;
        let n: u64 = shape.iter().product();
        let dtype = self.program.output_dtype();
        let mut out = vec![0u8; n as usize * dtype.size()];
        self.program.eval_broadcast(&ops, &mut out, 0..n)?;
        Ok((dtype, shape, out))
    }
}

/// numpy's repr of an array (a scalar's for 0-d).
pub(super) fn repr(dtype: Dtype, shape: &[u64], bytes: &[u8]) -> String {
    array_repr(dtype, shape, bytes).expect("the bytes are the shape's elements")
}

/// Writes the array of `dtype` and `shape` whose elements are `bytes` as a `.npy`.
pub(super) fn write_array(path: &Path, dtype: Dtype, shape: &[u64], bytes: &[u8]) -> Result<(), Failure> {
    fn put<T: bytemuck::Pod>(out: &mut NpyOutput, bytes: &[u8]) -> Result<(), Failure> {
        bytemuck::cast_slice_mut::<T, u8>(out.as_mut_slice::<T>()?).copy_from_slice(bytes);
        Ok(())
    }
    let mut out = NpyOutput::create(path, dtype, shape)?;
    match dtype {
        Dtype::Bool | Dtype::U8 => put::<u8>(&mut out, bytes)?,
        Dtype::I8 => put::<i8>(&mut out, bytes)?,
        Dtype::I16 => put::<i16>(&mut out, bytes)?,
        Dtype::U16 => put::<u16>(&mut out, bytes)?,
        Dtype::I32 => put::<i32>(&mut out, bytes)?,
        Dtype::U32 => put::<u32>(&mut out, bytes)?,
        Dtype::I64 => put::<i64>(&mut out, bytes)?,
        Dtype::U64 => put::<u64>(&mut out, bytes)?,
        Dtype::F16 => put::<half::f16>(&mut out, bytes)?,
        Dtype::F32 => put::<f32>(&mut out, bytes)?,
        Dtype::F64 => put::<f64>(&mut out, bytes)?,
    }
    out.commit()?;
    Ok(())
}

/// `shmpool reduce IN --expr 'sum(x, axis=1)'` (one axis reduction of an n-d array, nothing
/// around it): reduced straight into the `-o` file's mapping (or one buffer without `-o`), so
/// that memory holds one copy of the result. `None` when `calls` is not that case.
pub(super) fn single_axis(
    pool: &Pool,
    (rewritten, calls): (&str, &[ReductionCall]),
    (names, paths, arrays): (&[String], &[&Path], &[NpyArray]),
    output: Option<&Path>,
) -> Result<Option<String>, Failure> {
    let [call] = calls else { return Ok(None) };
    let Some(axis) = call.axis else { return Ok(None) };
    if rewritten.trim() != format!("{REDUCTION_PREFIX}0") {
        return Ok(None);
    }
    let used = Program::variables(&call.inner)?;
    let idx: Vec<usize> = (0..names.len()).filter(|&k| used.contains(&names[k])).collect();
    let typed: Vec<(&str, Dtype)> = idx.iter().map(|&k| (names[k].as_str(), arrays[k].dtype())).collect();
    let program = Program::compile_inputs(&call.inner, &typed)?;
    let files: Vec<(&Path, &NpyArray)> = idx.iter().map(|&k| (paths[k], &arrays[k])).collect();
    let (dtype, shape) = shmpool::expr_reduce::reduce_npy_axis_shape(&program, &files, &[], call.reduction, axis)?;
    if shape.is_empty() {
        return Ok(None);
    }
    let run = |out: &mut [u8]| {
        shmpool::expr_reduce::reduce_npy_axis_into(pool, &program, &files, &[], call.reduction, axis, out)
    };
    let (warning, text) = match output {
        Some(path) => {
            let mut out = NpyOutput::create(path, dtype, &shape)?;
            let bytes = output_bytes(&mut out, dtype)?;
            let warning = run(bytes)?;
            let text = repr(dtype, &shape, bytes);
            out.commit()?;
            (warning, text)
        }
        None => {
            let mut bytes = vec![0u8; shape.iter().product::<u64>() as usize * dtype.size()];
            (run(&mut bytes)?, repr(dtype, &shape, &bytes))
        }
    };
    if let Some(w) = warning {
        eprintln!("RuntimeWarning: {w}");
    }
    Ok(Some(text))
}

/// The elements of `out` as bytes.
fn output_bytes(out: &mut NpyOutput, dtype: Dtype) -> Result<&mut [u8], Failure> {
    Ok(match dtype.size() {
        1 => bytemuck::cast_slice_mut(out.as_mut_slice::<u8>()?),
        2 => bytemuck::cast_slice_mut(out.as_mut_slice::<[u8; 2]>()?),
        4 => bytemuck::cast_slice_mut(out.as_mut_slice::<[u8; 4]>()?),
        _ => bytemuck::cast_slice_mut(out.as_mut_slice::<[u8; 8]>()?),
    })
}

/// Output elements per row of a broadcast map, at most (a row is one unit of the map).
const ROW_MAX: u64 = 16_384;

/// What drives a map whose output is bigger than every input: the row numbers `0..total /
/// row` as a `.npy` in a temporary directory (one `u64` per row of `row` output elements,
/// `row` the largest divisor of the output's size up to [`ROW_MAX`]).
pub(super) struct RowDriver {
    pub row: u64,
    pub ids: NpyArray,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl RowDriver {
    pub fn new(out_shape: &[u64]) -> Result<RowDriver, Failure> {
        let total: u64 = out_shape.iter().product();
        let row = (1..=ROW_MAX.min(total.max(1))).rev().find(|r| total % r == 0).unwrap_or(1);
        let dir = temp_dir()?;
        let path = dir.path().join("rows.npy");
        let ids: Vec<u64> = (0..total / row).collect();
        write_array(&path, Dtype::U64, &[ids.len() as u64], bytemuck::cast_slice(&ids))?;
        let ids = open_input(&path)?;
        Ok(RowDriver { row, ids, path, _dir: dir })
    }
}

fn temp_dir() -> Result<tempfile::TempDir, Failure> {
    tempfile::tempdir().map_err(|e| Failure::runtime(format!("cannot create a temporary directory: {e}")))
}
