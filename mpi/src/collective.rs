//! The collectives of a map: waiting for every rank without taking a core from the workers,
//! agreeing on a status word, broadcasting rank 0's bytes.

use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::{Error, Result};

/// Waits until every rank of `comm` has arrived (`MPI_Ibarrier` tested in a loop that
/// sleeps between tests, so that a waiting rank leaves its core to the workers), calling
/// `tick` between tests.
pub fn wait_for_all(comm: &impl Communicator, mut tick: impl FnMut()) {
    let mut req = comm.immediate_barrier();
    let mut nap = Duration::from_micros(50);
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        tick();
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

/// [`Error::Usage`] when `comm` is an inter-communicator (its collectives reach the other
/// group, not this one's ranks): every rank of it gets the same answer, locally.
pub(crate) fn require_intra(comm: &impl Communicator) -> Result<()> {
    let mut inter: std::os::raw::c_int = 0;
    // SAFETY: `comm` is a live communicator handle (the trait's contract) and `inter` is valid
    // storage for the flag MPI_Comm_test_inter writes; it has no other precondition.
    let rc = unsafe { mpi::ffi::MPI_Comm_test_inter(comm.as_raw(), &mut inter) };
    if rc != 0 || inter != 0 {
        return Err(Error::Usage("an inter-communicator: pass an intra-communicator (its ranks map the file)".into()));
    }
    Ok(())
}

/// The largest status word of all ranks (0 = success), waiting politely first.
pub(crate) fn agree(comm: &SimpleCommunicator, status: i32, tick: impl FnMut()) -> i32 {
    agree_both(comm, status, tick).0
}

/// The largest and the smallest status word of all ranks, waiting politely first: a smallest
/// one that is not 0 says every rank failed (and rank 0 alone should say why).
pub(crate) fn agree_both(comm: &SimpleCommunicator, status: i32, tick: impl FnMut()) -> (i32, i32) {
    wait_for_all(comm, tick);
    let mut all = [0i32; 2];
    comm.all_reduce_into(&[status, -status][..], &mut all[..], SystemOperation::max());
    (all[0], -all[1])
}

/// This rank's error after a step that failed somewhere (`all` the largest status, `least`
/// the smallest): its own, unless every rank failed and this is not rank 0, which then
/// reports for all (one message, as `shmpool map` gives one).
pub(crate) fn step_error(rank: usize, all: i32, least: i32, own: Option<Error>) -> Error {
    match own {
        Some(e) if rank == 0 || least == 0 => e,
        _ => Error::OtherRank { status: all },
    }
}

/// Broadcasts rank 0's bytes (length first), waiting politely first.
pub(crate) fn broadcast_bytes(comm: &SimpleCommunicator, bytes: &mut Vec<u8>) {
    wait_for_all(comm, || {});
    let root = comm.process_at_rank(0);
    let mut len = bytes.len() as u64;
    root.broadcast_into(&mut len);
    bytes.resize(len as usize, 0);
    if len > 0 {
        root.broadcast_into(&mut bytes[..]);
    }
}
