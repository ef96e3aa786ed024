//! `scatter → map → gather` for arrays that live in rank 0's memory.

use bytemuck::Pod;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use shmpool::{KernelSpec, Pool, SharedVec};

use crate::collective::{agree, require_intra, wait_for_all};
use crate::{slice_of, Error, Result};

/// Maps `spec` over an array that lives in rank 0's memory (collective): rank 0 passes
/// `Some(input)`, the others `None`; the array is scattered in contiguous slices over the
/// ranks, each rank maps its slice with its own `pool` (the kernel sees the global indices,
/// `i` of an expression), and rank 0 gets the whole result back in order. The other ranks
/// get `None`.
///
/// # Errors
///
/// [`Error::TooLarge`] when a slice exceeds one MPI message (2 GiB); [`Error::Engine`] when
/// this rank's map fails; [`Error::OtherRank`] when another rank's does. No rank gathers
/// anything unless every rank succeeded.
pub fn scatter_map_gather<C: Communicator, In: Pod, Out: Pod>(
    comm: &C,
    pool: &Pool,
    input: Option<&[In]>,
    spec: &KernelSpec,
) -> Result<Option<Vec<Out>>> {
    require_intra(comm)?;
    wait_for_all(comm, || {}); // not in MPI_Comm_dup's busy-polling wait
    let comm = comm.duplicate();
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    let widest = std::mem::size_of::<In>().max(std::mem::size_of::<Out>());
    let n = announce_len(&comm, input.map_or(0, <[In]>::len), widest)?;
    let local = slice_of(n, ranks, rank);
    let (mut xs, mut ys) = allocate::<In, Out>(&comm, local.len())?;
    let whole_fits = n.saturating_mul(widest) <= Count::MAX as usize;
    let all_in: &[u8] = bytemuck::cast_slice(input.unwrap_or(&[]));
    scatter_bytes(&comm, n, std::mem::size_of::<In>(), whole_fits, all_in, bytemuck::cast_slice_mut(&mut xs[..]));
    let mut own = None;
    let status = match pool.map_into(&xs, &mut ys, &spec.index_offset(local.start as u64)) {
        Ok(()) => 0,
        Err(e) => {
            let e = Error::from(global_range(e, local.start));
            let code = e.exit_code();
            own = Some(e);
            code
        }
    };
    let all = agree(&comm, status, || {});
    if all != 0 {
        return Err(own.unwrap_or(Error::OtherRank { status: all }));
    }
    let send: &[u8] = bytemuck::cast_slice(&ys[..]);
    if rank != 0 {
        gather_bytes(&comm, n, std::mem::size_of::<Out>(), whole_fits, send, &mut []);
        return Ok(None);
    }
    let mut out = vec![Out::zeroed(); n];
    gather_bytes(&comm, n, std::mem::size_of::<Out>(), whole_fits, send, bytemuck::cast_slice_mut(&mut out[..]));
    Ok(Some(out))
}

/// `e` with the index range of its chunk (rank-local: the slice is mapped as an array of its
/// own) moved to the global indices the kernel saw, as [`crate::map_npy`]'s errors name them.
fn global_range(mut e: shmpool::Error, start: usize) -> shmpool::Error {
    use shmpool::Error as E;
    if let E::WorkerCrashed { range, .. } | E::KernelPanicked { range, .. } | E::ChunkTimedOut { range, .. } = &mut e {
        *range = range.start + start..range.end + start;
    }
    e
}

/// Rank 0 says how many elements there are (`n` on rank 0), or that a slice of elements
/// `widest` bytes wide cannot be one MPI message.
fn announce_len(comm: &SimpleCommunicator, n: usize, widest: usize) -> Result<usize> {
    let ranks = comm.size() as usize;
    let mut head = [0u64; 2];
    if comm.rank() == 0 {
        let largest = n.div_ceil(ranks) as u64; // no slice is larger
        let bytes = largest * widest as u64;
        head = [n as u64, u64::from(bytes > Count::MAX as u64)];
    }
    wait_for_all(comm, || {});
    comm.process_at_rank(0).broadcast_into(&mut head[..]);
    let n = head[0] as usize;
    if head[1] != 0 {
        let bytes = (n.div_ceil(ranks) * widest) as u64;
        return Err(Error::TooLarge { bytes, max: Count::MAX as u64 });
    }
    Ok(n)
}

/// The shared arrays the workers read and write in place, allocated before the scatter: a rank
/// that cannot allocate them fails every rank, never leaves them waiting in it.
fn allocate<In: Pod, Out: Pod>(comm: &SimpleCommunicator, len: usize) -> Result<(SharedVec<In>, SharedVec<Out>)> {
    let arrays = SharedVec::<In>::zeroed(len).and_then(|xs| Ok((xs, SharedVec::<Out>::zeroed(len)?)));
    let (arrays, status, own) = match arrays {
        Ok(a) => (Some(a), 0, None),
        Err(e) => {
            let e = Error::from(e);
            (None, e.exit_code(), Some(e))
        }
    };
    let all = agree(comm, status, || {});
    match arrays {
        Some(a) if all == 0 => Ok(a),
        _ => Err(own.unwrap_or(Error::OtherRank { status: all })),
    }
}

/// Byte counts and byte displacements of every rank's slice of `n` elements of `size` bytes.
/// Displacements fit a C int only when the whole array does (the callers check).
fn counts(n: usize, ranks: usize, size: usize) -> (Vec<Count>, Vec<Count>) {
    let c: Vec<Count> = (0..ranks).map(|r| (slice_of(n, ranks, r).len() * size) as Count).collect();
    let d: Vec<Count> =
        (0..ranks).map(|r| (slice_of(n, ranks, r).start * size).min(Count::MAX as usize) as Count).collect();
    (c, d)
}

/// Scatters rank 0's `all` (n elements of `size` bytes) into every rank's `recv`: one
/// collective when the whole array fits a message's counts, rank by rank otherwise.
fn scatter_bytes(comm: &SimpleCommunicator, n: usize, size: usize, whole_fits: bool, all: &[u8], recv: &mut [u8]) {
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    let root = comm.process_at_rank(0);
    if whole_fits {
        if rank == 0 {
            let (c, d) = counts(n, ranks, size);
            root.scatter_varcount_into_root(&Partition::new(all, c, d), recv);
        } else {
            root.scatter_varcount_into(recv);
        }
    } else if rank == 0 {
        let local = slice_of(n, ranks, 0);
        recv.copy_from_slice(&all[local.start * size..local.end * size]);
        for r in 1..ranks {
            let s = slice_of(n, ranks, r);
            comm.process_at_rank(r as i32).send(&all[s.start * size..s.end * size]);
        }
    } else {
        root.receive_into(recv);
    }
}

/// Gathers every rank's `send` into rank 0's `all` (n elements of `size` bytes), in rank order.
fn gather_bytes(comm: &SimpleCommunicator, n: usize, size: usize, whole_fits: bool, send: &[u8], all: &mut [u8]) {
    let (rank, ranks) = (comm.rank() as usize, comm.size() as usize);
    let root = comm.process_at_rank(0);
    if rank != 0 {
        if whole_fits {
            root.gather_varcount_into(send);
        } else {
            root.send(send);
        }
        return;
    }
    if whole_fits {
        let (c, d) = counts(n, ranks, size);
        root.gather_varcount_into_root(send, &mut PartitionMut::new(all, c, d));
    } else {
        let local = slice_of(n, ranks, 0);
        all[local.start * size..local.end * size].copy_from_slice(send);
        for r in 1..ranks {
            let s = slice_of(n, ranks, r);
            comm.process_at_rank(r as i32).receive_into(&mut all[s.start * size..s.end * size]);
        }
    }
}
