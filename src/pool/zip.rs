//! Several inputs: zip maps (`map` / `map_into` over a tuple of inputs) and the engine of the
//! generic reductions ([`Pool::reduce`], [`Pool::map_reduce`], `fold.rs`). A thin layer over
//! one map's life (`run.rs`): every data input is a segment (shared inputs as they are, plain
//! ones staged with one copy), the first rides in the descriptors as a one-input map's does,
//! the others are named in the parameter block's zip header (`ring::zip`) and sliced by the
//! workers to each chunk. Retries, timeouts and corruption checks are the one-input map's.
#![deny(unsafe_code)]

use std::sync::Arc;

use super::run::{self, Dest, Input, Output};
use super::{drive, Pool};
use crate::array::{Data, Side, Sink, Source, Staging, Target};
use crate::error::{Error, Result};
use crate::kernel::KernelSpec;
use crate::ring::index;
use crate::ring::zip::{ZipHeader, ZipInput, MAX_EXTRA};
use crate::shm::Segment;

/// Staging buffers a several-input map took, given back to the pool when it is dropped (after
/// the map returned: no worker touches them any more).
pub(super) struct Stage<'p> {
    pool: &'p Pool,
    bufs: Vec<Staging>,
}

impl<'p> Stage<'p> {
    pub(super) fn new(pool: &'p Pool) -> Self {
        Stage { pool, bufs: Vec::new() }
    }

    /// A staging buffer of at least `bytes` bytes (its content unspecified).
    pub(super) fn buffer(&mut self, bytes: usize) -> Result<Arc<Segment>> {
        let s = self.pool.take_staging(bytes.max(1))?;
        let seg = s.seg.clone();
        self.bufs.push(s);
        Ok(seg)
    }

    /// Every input as a segment registered with the pool: shared ones as they are, plain ones
    /// copied into a staging buffer.
    pub(super) fn inputs(&mut self, srcs: &[Source<'_>]) -> Result<Vec<Arc<Segment>>> {
        let mut segs = Vec::with_capacity(srcs.len());
        for s in srcs {
            let seg = match &s.data {
                Data::Shared { seg, off: 0, .. } => Arc::clone(seg),
                // Plain memory, or a range of a file not at its start: copied.
                _ => {
                    let b = s.bytes();
                    let mut st = self.pool.take_staging(b.len().max(1))?;
                    st.bytes_mut(b.len()).copy_from_slice(b);
                    let seg = st.seg.clone();
                    self.bufs.push(st);
                    seg
                }
            };
            self.pool.shared.register(&seg);
            segs.push(seg);
        }
        Ok(segs)
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        for s in self.bufs.drain(..) {
            self.pool.give_back(s);
        }
    }
}

/// The common length of a several-input kernel's data inputs, in elements, once their element
/// types (and `output`'s) are checked against the kernel's.
///
/// # Errors
///
/// [`Error::TypeMismatch`]; [`Error::InputLengths`] naming the first input whose length
/// differs.
pub(super) fn zip_len(spec: &KernelSpec, srcs: &[Source<'_>], output: Side) -> Result<usize> {
    let sides: Vec<_> = srcs.iter().map(|s| s.side).collect();
    spec.check_zip_sides(&sides, output)?;
    if srcs.len() > MAX_EXTRA + 1 || srcs.len() != spec.zip.len() {
        return Err(Error::TypeMismatch {
            kernel: format!("a kernel of {} inputs", spec.zip.len()),
            data: format!("{} inputs", srcs.len()),
        });
    }
    let lens: Vec<usize> = srcs.iter().zip(&spec.zip).map(|(s, t)| s.bytes().len() / t.size()).collect();
    match lens.iter().position(|&l| l != lens[0]) {
        Some(input) => Err(Error::InputLengths { first: lens[0], input, len: lens[input] }),
        None => Ok(lens.first().copied().unwrap_or(0)),
    }
}

/// One several-input map: `units` units of `spec` (its parameter block not yet headed),
/// the descriptor's own input `main`, the others as `header` names them, into `dest`.
pub(super) struct ZipRun<'a> {
    pub(super) spec: &'a KernelSpec,
    pub(super) header: ZipHeader,
    pub(super) units: usize,
    pub(super) main: &'a Arc<Segment>,
    /// Bytes one unit reads and writes, over every input (for the chunk plan).
    pub(super) unit_bytes: usize,
    /// Fixed chunk length in units (the pool's `chunk_len` for element maps).
    pub(super) fixed: Option<usize>,
    /// Whether a memory-mapped file is read or written (smaller chunks).
    pub(super) file: bool,
}

impl Pool {
    /// Runs a [`ZipRun`] into `dest` to its end.
    pub(super) fn drive_zip(
        &self,
        z: ZipRun<'_>,
        dest: Dest<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        let main = Input::Shared(z.main);
        let (run, spec) = self.plan_zip(z, dest)?;
        drive::drive(run, &spec, main, Output::Shared, progress)
    }

    /// Plans a [`ZipRun`] into `dest`: the map and the spec its chunks carry (its parameter
    /// block headed by the zip header).
    pub(super) fn plan_zip(&self, z: ZipRun<'_>, dest: Dest<'_>) -> Result<(run::MapRun<'_>, KernelSpec)> {
        if z.spec.index_offset != 0 {
            // The workers slice a zip map's inputs by the chunk's index: it must be the unit's.
            return Err(Error::InvalidOption {
                option: "index offset of a several-input map",
                value: z.spec.index_offset,
                allowed: "0",
            });
        }
        let mut spec = z.spec.clone();
        spec.params = z.header.encode(&z.spec.params);
        let digest = ZipHeader::digest(&spec.params[..z.header.len()], &crate::kernel::key());
        let max_bytes = if z.file { index::MAX_FILE_CHUNK_BYTES } else { index::MAX_CHUNK_BYTES };
        let run = run::MapRun::new(self, &spec, z.units, &Input::Shared(z.main), dest, run::Chunking::Shared)?
            .with_zip(digest)
            .replan(z.unit_bytes, z.fixed, max_bytes)?;
        Ok((run, spec))
    }

    /// A blocking zip map of `spec` from `srcs` into `target` (checked here).
    pub(super) fn run_zip(
        &self,
        spec: &KernelSpec,
        srcs: Vec<Source<'_>>,
        target: Target<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        let units = zip_len(spec, &srcs, target.side)?;
        if Some(target.len()) != units.checked_mul(spec.out_size) {
            return Err(Error::LengthMismatch { input: units, output: target.len() / spec.out_size });
        }
        self.check_open()?;
        if units == 0 {
            return Ok(());
        }
        let side = target.side;
        match target.sink {
            Sink::Shared { off, .. } if off != 0 => Err(Error::InvalidOption {
                option: "output range start of a several-input map",
                value: off as u64,
                allowed: "0 (a zip map writes a whole output; map into a range with one input)",
            }),
            Sink::Shared { seg, path, .. } => {
                let aliased = srcs.iter().any(|s| match &s.data {
                    Data::Shared { seg: i, .. } => i.identity().is_some() && i.identity() == seg.identity(),
                    Data::Plain(_) => false,
                });
                if aliased {
                    return Err(Error::Aliased { path: path.map_or_else(String::new, |p| p.display().to_string()) });
                }
                self.zip_into(spec, units, &srcs, Dest::Caller(seg), progress)
            }
            Sink::Plain(o) => {
                let mut stage = Stage::new(self);
                let out = stage.buffer(o.len())?;
                self.zip_into(spec, units, &srcs, Dest::Staging(&out), progress)?;
                let mut buf = stage.bufs.pop().expect("the output buffer taken above");
                o.copy_from_slice(buf.bytes_mut(o.len()));
                stage.bufs.push(buf);
                Ok(())
            }
            Sink::Scatter { mut buf, scatter } => {
                let plain = Target { sink: Sink::Plain(&mut buf), side };
                self.run_zip(spec, srcs, plain, progress)?;
                scatter(&buf);
                Ok(())
            }
        }
    }

    /// Stages the inputs of a zip map and runs it into `dest`.
    fn zip_into(
        &self,
        spec: &KernelSpec,
        units: usize,
        srcs: &[Source<'_>],
        dest: Dest<'_>,
        progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<()> {
        let mut stage = Stage::new(self);
        let segs = stage.inputs(srcs)?;
        let header = ZipHeader {
            inputs: segs[1..]
                .iter()
                .zip(&spec.zip[1..])
                .map(|(s, t)| ZipInput { seg: s.id(), elem_size: t.size() as u64, block: 1, total: units as u64 })
                .collect(),
        };
        let file = segs.iter().chain(dest.segment()).any(|s| s.file_area().is_some());
        let unit_bytes = spec.zip.iter().map(|t| t.size()).sum::<usize>() + spec.out_size;
        let fixed = self.shared.cfg.chunk_len;
        let z = ZipRun { spec, header, units, main: &segs[0], unit_bytes, fixed, file };
        self.drive_zip(z, dest, progress)
    }
}
