//! [`map_npy`]: one map of a `.npy` file over the ranks of a communicator, in four steps:
//! rank 0 checks and creates the temporary output and announces it ([`announce`]); every rank
//! opens its part and builds its pool ([`set_up`]); every rank maps its slice ([`map_slice`]);
//! rank 0 publishes when every rank succeeded ([`publish`]).

use std::path::PathBuf;

use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use shmpool::{KernelSpec, NpyOutput, Pool};

use crate::collective::{agree_both, broadcast_bytes, require_intra, step_error, wait_for_all};
#[cfg(feature = "testing")]
use crate::hooks;
use crate::job::{check_arguments, pool_workers, worker_count, Prepared};
use crate::placement::within_share;
use crate::progress::Reporter;
use crate::temporary::{set_creating, set_temporary, start_watcher};
use crate::{slice_of, Error, MapJob, Mapped, Progress, Result, EXIT_FAILURE};

/// Maps `job.expr` over the `.npy` file `job.input` with every rank of `comm` (collective:
/// every rank calls it with the same job), writing `job.output` byte-identical to what
/// `shmpool map` writes on one machine. `progress` is called on rank 0 only, with the elements
/// done across ranks, at most every quarter second and once at the end.
///
/// Rank 0 validates the arguments, the input and the expression and creates the output's
/// temporary file; on a failure there every rank returns (the others with
/// [`Error::OtherRank`]) before any rank writes. The output is published by rank 0 only when
/// every rank succeeded; otherwise it is removed and every rank returns an error.
///
/// # Errors
///
/// [`Error::Usage`] and [`Error::Engine`] for this rank's own failures (bad input, kernel
/// panics, crashed workers, I/O; an inter-communicator; a job that differs from rank 0's in
/// what makes the output), [`Error::InputChanged`] when the input was truncated or replaced
/// during the map; [`Error::OtherRank`] when another rank failed (and when every rank failed
/// the same step, on every rank but 0, so that one message says it).
///
/// # Panics
///
/// Never on user input. A rank that dies stops the job through mpirun; install
/// [`abort_on_panic`](crate::abort_on_panic) so that a panic does too.
pub fn map_npy<C: Communicator>(comm: &C, job: &MapJob, progress: Option<&mut dyn FnMut(Progress)>) -> Result<Mapped> {
    require_intra(comm)?;
    // Ranks arrive at different times (start-up, the caller's own work): waiting for them in
    // MPI_Comm_dup would busy-poll a core away from the other ranks and their workers.
    wait_for_all(comm, || {});
    // A private communicator: our progress messages never mix with the caller's.
    let comm = comm.duplicate();
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    // Ranks that all run on one node share its page cache: what each writes into the mapped
    // output is what rank 0 publishes, with no write-back first. Ranks on several nodes (a
    // shared filesystem) write their part back (`msync`) before they report success.
    let node = comm.split_shared(0);
    let place = Place { local: node.rank() as usize, locals: node.size() as usize };
    let one_node = place.locals == ranks;

    let mut ann = announce(&comm, job, progress.is_some())?;
    let Setup { p, part, local, pool } = set_up(&comm, job, &mut ann, place)?;
    let mut reporter = Reporter::new(&comm, ann.reporting, p.len(), progress);
    let own = map_slice(&p, part, &local, pool.as_ref(), one_node, &mut reporter).err();
    // Stopped because another rank failed: that rank's status fails the job and says why.
    let own = if reporter.stop_requested() { None } else { own };
    if own.is_some() && ranks > 1 {
        reporter.stop_the_others();
    }
    reporter.finish(if own.is_none() { local.len() } else { reporter.mine() });
    drop(pool);
    #[cfg(feature = "testing")]
    hooks::waiting(rank);
    let (all, least) = agree_both(&comm, own.as_ref().map_or(0, Error::exit_code), || {});
    let own = if all != 0 && rank != 0 { Some(step_error(rank, all, least, own)) } else { own };
    publish(&comm, all, ann.creator.take(), own)?;
    Ok(Mapped {
        len: p.len(),
        shape: p.shape.clone(),
        in_dtype: p.src.dtype(),
        out_dtype: p.out_dtype,
        ranks,
        workers: pool_workers(job, &local),
        local,
    })
}

/// What rank 0 announced to every rank in step 1, and what rank 0 keeps of it.
struct Announced {
    /// The output's temporary file.
    temp: PathBuf,
    /// Whether rank 0 shows progress (the other ranks then report theirs).
    reporting: bool,
    /// Whether this rank's job makes the same output as rank 0's.
    same_job: bool,
    /// Rank 0's input, opened and checked.
    prepared: Option<Prepared>,
    /// What identifies the input files rank 0 opened ([`MapJob::input_identities`]).
    identities: Vec<u8>,
    /// Rank 0's temporary output (dropped: removed; committed: published).
    creator: Option<NpyOutput>,
}

/// Step 1: rank 0 checks everything and creates the temporary output; one broadcast says how
/// it went (a status byte, whether progress is shown, rank 0's job fingerprint, the
/// temporary's name).
fn announce(comm: &SimpleCommunicator, job: &MapJob, reporting: bool) -> Result<Announced> {
    let rank = comm.rank();
    let mut ann = Announced {
        temp: PathBuf::new(),
        reporting,
        same_job: true,
        prepared: None,
        identities: Vec::new(),
        creator: None,
    };
    let mut own = None;
    let mut word = Vec::new();
    if rank == 0 {
        match create_output(job) {
            Ok((p, ids, out, temp)) => {
                set_temporary(Some(temp.clone()));
                word.push(0u8);
                word.push(u8::from(reporting));
                for field in [job.fingerprint(), ids] {
                    word.extend_from_slice(&(field.len() as u64).to_le_bytes());
                    word.extend_from_slice(&field);
                }
                word.extend_from_slice(temp.as_os_str().as_encoded_bytes());
                ann.prepared = Some(p);
                ann.creator = Some(out);
            }
            Err(e) => {
                set_temporary(None);
                word.push(e.exit_code() as u8);
                own = Some(e);
            }
        }
    }
    broadcast_bytes(comm, &mut word);
    let status = i32::from(word.first().copied().unwrap_or(EXIT_FAILURE as u8));
    if status != 0 {
        return Err(own.unwrap_or(Error::OtherRank { status }));
    }
    ann.reporting = word.get(1) == Some(&1);
    let mut rest = word.get(2..).unwrap_or(&[]);
    let mut field = || {
        let len = rest.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes) as usize;
        let (f, r) = rest.get(8..).unwrap_or(&[]).split_at(len.min(rest.len().saturating_sub(8)));
        rest = r;
        f.to_vec()
    };
    let (theirs, identities) = (field(), field());
    let temp = rest;
    ann.same_job = theirs == job.fingerprint();
    ann.identities = identities;
    ann.temp = {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(temp))
    };
    if rank != 0 {
        set_temporary(Some(ann.temp.clone()));
    }
    Ok(ann)
}

/// Rank 0's part of step 1: the checks, the input, and the temporary output with its name.
fn create_output(job: &MapJob) -> Result<(Prepared, Vec<u8>, NpyOutput, PathBuf)> {
    check_arguments(job)?;
    let (p, ids) = job.prepare_identified()?;
    // Until the name is known, a signal removes the file being created by what this process
    // has open (a rank killed meanwhile makes mpirun stop this one).
    start_watcher();
    set_creating(&job.output);
    // SAFETY: the temporary's name goes only to the other ranks, which open their parts with
    // it (`open_part`), and to the signal handler that removes it after a failure; nothing
    // truncates or rewrites the file through it while it is mapped.
    #[allow(unsafe_code)]
    let (out, temp) = unsafe { NpyOutput::create_shared(&job.output, p.out_dtype, &p.shape) }?;
    Ok((p, ids, out, temp))
}

/// What a rank maps with: the input, its part of the output, its slice, its pool (none for an
/// empty slice).
struct Setup {
    p: Prepared,
    part: NpyOutput,
    local: std::ops::Range<usize>,
    pool: Option<Pool>,
}

/// Step 2: every rank opens the input and its part of the output and builds its pool; the
/// ranks agree on how that went. On a failure anywhere, rank 0 removes the temporary.
fn set_up(comm: &SimpleCommunicator, job: &MapJob, ann: &mut Announced, place: Place) -> Result<Setup> {
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    let setup = open_slice(job, ann, rank, ranks, place);
    let (all, least) = agree_both(comm, setup.as_ref().err().map_or(0, Error::exit_code), || {});
    match setup {
        Ok(s) if all == 0 => Ok(s),
        s => {
            set_temporary(None);
            drop(ann.creator.take()); // removes the temporary
            Err(step_error(rank, all, least, s.err()))
        }
    }
}

fn open_slice(job: &MapJob, ann: &mut Announced, rank: usize, ranks: usize, place: Place) -> Result<Setup> {
    if !ann.same_job {
        return Err(Error::Usage(format!(
            "rank {rank} was given another job than rank 0 (input, output, expression, dtype or --in-place differ)"
        )));
    }
    let p = match ann.prepared.take() {
        Some(p) => p,
        None => {
            let (p, ids) = job.prepare_identified()?;
            if ids != ann.identities {
                return Err(Error::Usage(format!(
                    "rank {rank} opened other input files than rank 0 (a relative name in another working \
                     directory, or an input replaced while the job started): ranks must see the same files"
                )));
            }
            p
        }
    };
    // SAFETY: every rank writes only its own slice of the file, through `map_into` of its range, and no
    // rank takes a slice of the elements; rank 0 removes or renames the file only after every
    // rank has finished with it (the collective after the map).
    #[allow(unsafe_code)]
    let part = unsafe { NpyOutput::open_part(&ann.temp, p.out_dtype, &p.shape) }?;
    // A map over row numbers splits whole rows.
    let row = p.rows.unwrap_or(1) as usize;
    let units = slice_of(p.len() / row.max(1), ranks, rank);
    let local = units.start * row..units.end * row;
    let pool = if local.is_empty() { None } else { Some(build_pool(job, local.len(), place)?) };
    Ok(Setup { p, part, local, pool })
}

/// This rank's place on its node: node-local rank `local` of `locals` ranks there.
#[derive(Clone, Copy)]
struct Place {
    local: usize,
    locals: usize,
}

fn build_pool(job: &MapJob, n: usize, place: Place) -> Result<Pool> {
    // A pool pins its workers to CPUs of the mask of the thread that builds it: the ranks of
    // one node each build theirs within their own share of its CPUs (`placement`).
    let mut b = Pool::builder().workers(worker_count(job.workers, n));
    if place.locals > 1 {
        // Several ranks' callers spinning beside their workers would oversubscribe the node's
        // cores; a file map's chunks are large, so a futex wake-up costs nothing.
        b = b.wait_strategy(shmpool::WaitStrategy::Sleep);
    }
    if let Some(c) = job.chunk_len {
        b = b.chunk_len(c);
    }
    Ok(within_share(place.local, place.locals, || b.build())?)
}

/// Step 3: this rank maps its slice in place (reporting progress as it goes) and, when the
/// ranks span several nodes, writes its part back.
fn map_slice(
    p: &Prepared,
    mut part: NpyOutput,
    local: &std::ops::Range<usize>,
    pool: Option<&Pool>,
    one_node: bool,
    reporter: &mut Reporter<'_, '_>,
) -> Result<()> {
    let result = match pool {
        None => Ok(()),
        Some(pool) => map_range(p, &mut part, local, pool, reporter),
    };
    #[cfg(feature = "testing")]
    hooks::after_map(reporter.rank());
    let flushed = if one_node {
        drop(part);
        Ok(())
    } else {
        part.commit().map_err(Error::from)
    };
    result.and(flushed)
}

fn map_range(
    p: &Prepared,
    part: &mut NpyOutput,
    local: &std::ops::Range<usize>,
    pool: &Pool,
    reporter: &mut Reporter<'_, '_>,
) -> Result<()> {
    #[cfg(feature = "testing")]
    let test_spec = hooks::kernel_panics(reporter.rank()).then(|| KernelSpec::chunk(hooks::panicking_kernel));
    #[cfg(not(feature = "testing"))]
    let test_spec: Option<KernelSpec> = None;
    let spec = test_spec.as_ref().unwrap_or(&p.spec);
    let mut stopping = false;
    let mut tick = |done: usize| {
        #[cfg(feature = "testing")]
        {
            let rank = reporter.rank();
            hooks::mid_map(rank, pool, || reporter.stop_requested());
        }
        reporter.tick(done);
        if reporter.stop_requested() && !stopping {
            // Another rank failed: this map ends now (`Error::Cancelled`), not at its end.
            stopping = true;
            pool.terminate();
        }
    };
    let size_before = std::fs::metadata(&p.src_path).map(|m| m.len()).ok();
    let mut output = part.range(local.clone()).map_err(Error::Engine)?;
    let mapped = match p.rows {
        // Row numbers (global: the kernel derives `i` from them), `row` elements each.
        Some(row) => {
            let ids: Vec<u64> = (local.start as u64 / row..local.end as u64 / row).collect();
            let mut tick_rows = |done: usize| tick(done * row as usize);
            pool.map_into_progress(ids.as_slice(), &mut output, spec, &mut tick_rows)
        }
        None => {
            let (input, spec) =
                (p.src.range(local.clone()).map_err(Error::Engine)?, spec.index_offset(local.start as u64));
            pool.map_into_progress(&input, &mut output, &spec, &mut tick)
        }
    };
    mapped.map_err(|e| {
        // A worker that cannot read its chunk of a file that shrank under it dies: say what
        // happened to the input, as `shmpool map` does.
        let size_now = std::fs::metadata(&p.src_path).map(|m| m.len()).ok();
        match size_before {
            Some(was) if size_now != size_before => Error::InputChanged {
                path: p.src_path.display().to_string(),
                now: size_now.map_or("gone".to_string(), |n| format!("{n} bytes")),
                was,
                source: e,
            },
            _ => Error::Engine(e),
        }
    })
}

/// Step 4: rank 0 publishes only if every rank succeeded (`all` is 0), and tells them how
/// that went.
fn publish(comm: &SimpleCommunicator, all: i32, creator: Option<NpyOutput>, mut own: Option<Error>) -> Result<()> {
    let rank = comm.rank();
    let mut published = 0i32;
    if let Some(out) = creator {
        if all == 0 {
            if let Err(e) = out.commit() {
                published = EXIT_FAILURE;
                own = Some(e.into());
            }
        } else {
            drop(out); // removes the temporary
        }
    }
    // The other ranks keep the temporary's name until rank 0 says it published: if rank 0 dies
    // at its rename, mpirun stops them and their signal handlers remove it (after a publish,
    // the name is gone and removing it does nothing).
    if rank == 0 {
        set_temporary(None);
    }
    wait_for_all(comm, || {});
    comm.process_at_rank(0).broadcast_into(&mut published);
    set_temporary(None);
    let status = all.max(published);
    if status != 0 {
        return Err(own.unwrap_or(Error::OtherRank { status }));
    }
    Ok(())
}
