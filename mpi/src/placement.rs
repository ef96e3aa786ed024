//! Where a rank's workers run when several ranks share a node: each rank pins its workers to
//! its own share of the node's CPUs, as mpirun binds the ranks themselves.
//!
//! Left to the scheduler, the freshly started workers of two ranks sometimes land on one core
//! while the other idles (the ranks sleep while their workers map); a memory-bound map then
//! took 2-6x as long, from run to run. A pool pins its workers within the CPU mask of the
//! thread that builds it, so the rank builds its pool with its mask narrowed to its share and
//! widens it again afterwards.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs of `allowed` (in order) that node-local rank `local` of `locals` takes: an equal
/// contiguous share when there are at least as many CPUs as ranks, else one CPU, round robin.
pub(crate) fn share_of(allowed: &[usize], local: usize, locals: usize) -> Vec<usize> {
    let (c, r) = (allowed.len(), locals.max(1));
    if c == 0 {
        return Vec::new();
    }
    if r > c {
        return vec![allowed[local % c]];
    }
    allowed[local * c / r..(local + 1) * c / r].to_vec()
}

/// Runs `f` with this thread's CPU mask narrowed to its share of the node (`local` of
/// `locals` ranks on this node), then restores the mask. Best effort: when the mask cannot be
/// read or set, `f` runs with the mask as it is.
pub(crate) fn within_share<T>(local: usize, locals: usize, f: impl FnOnce() -> T) -> T {
    let Ok(before) = sched_getaffinity(Pid::from_raw(0)) else { return f() };
    let allowed: Vec<usize> = (0..CpuSet::count()).filter(|&c| before.is_set(c).unwrap_or(false)).collect();
    let mut share = CpuSet::new();
    for c in share_of(&allowed, local, locals) {
        let _ = share.set(c);
    }
    let narrowed = sched_setaffinity(Pid::from_raw(0), &share).is_ok();
    let out = f();
    if narrowed {
        let _ = sched_setaffinity(Pid::from_raw(0), &before);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{share_of, within_share};
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;

    fn mask() -> Vec<usize> {
        let set = sched_getaffinity(Pid::from_raw(0)).expect("sched_getaffinity");
        (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
    }

    #[test]
    fn a_pool_is_built_within_the_share_and_the_mask_is_restored_after() {
        let before = mask();
        let locals = before.len().max(2);
        let last = locals - 1;
        let inside = within_share(last, locals, mask);
        assert_eq!(inside, share_of(&before, last, locals), "the thread's mask inside");
        assert_eq!(mask(), before, "the mask after");
    }

    #[test]
    fn ranks_of_a_node_take_disjoint_shares_that_cover_its_cpus() {
        let cpus: Vec<usize> = (0..8).collect();
        for locals in 1..=8 {
            let shares: Vec<Vec<usize>> = (0..locals).map(|l| share_of(&cpus, l, locals)).collect();
            assert!(shares.iter().all(|s| !s.is_empty()), "{locals}: {shares:?}");
            assert_eq!(shares.concat(), cpus, "{locals} ranks must cover every CPU once");
        }
        assert_eq!(share_of(&[2, 5], 1, 2), vec![5]);
    }

    #[test]
    fn more_ranks_than_cpus_take_one_cpu_each_round_robin() {
        let got: Vec<Vec<usize>> = (0..5).map(|l| share_of(&[0, 1], l, 5)).collect();
        assert_eq!(got, vec![vec![0], vec![1], vec![0], vec![1], vec![0]]);
        assert!(share_of(&[], 0, 2).is_empty());
    }
}
