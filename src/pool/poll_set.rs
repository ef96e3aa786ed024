//! `poll` over a set that may be larger than the process's descriptor limit.
//!
//! Linux refuses (`EINVAL`) a `poll` of more descriptors than `RLIMIT_NOFILE`'s soft limit,
//! however few of them are open. The supervisor polls 1 + 2 × workers descriptors, so a program
//! that lowers its limit below that after building a pool (a server that drops privileges and
//! limits, a test that provokes EMFILE) would make every poll fail at once: a busy loop that
//! never notices a worker's death. This splits such a set instead: it waits on the first part
//! (which holds the wake-up pipe) and checks the rest without waiting, so a death in the rest is
//! noticed within one wait of `timeout`.
#![deny(unsafe_code)]

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollTimeout};
use nix::sys::resource::{getrlimit, Resource};

/// Polls `fds` for up to `timeout`, like `poll`, and returns how many have events (0 on a
/// timeout or a signal). Splits the set when it is larger than the descriptor limit; if not
/// even one descriptor may be polled (a limit of 0), it waits `timeout` and reports nothing.
pub(super) fn poll_all(fds: &mut [PollFd], timeout: PollTimeout) -> usize {
    match poll(fds, timeout) {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        Err(Errno::EINVAL) if !fds.is_empty() => poll_split(fds, timeout, soft_limit()),
        // EINTR: a signal, as good as a timeout (the caller checks everything each time).
        // ENOMEM: the kernel could not allocate the poll table; wait without it rather than
        // retrying at once.
        Err(_) => {
            let _ = poll(&mut [], timeout);
            0
        }
    }
}

/// The soft `RLIMIT_NOFILE`, as a count of descriptors one `poll` may take.
fn soft_limit() -> usize {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
}

/// Waits on the first `part` descriptors for up to `timeout`, then polls the others `part` at a
/// time without waiting.
fn poll_split(fds: &mut [PollFd], timeout: PollTimeout, part: usize) -> usize {
    if part == 0 {
        let _ = poll(&mut [], timeout);
        return 0;
    }
    let mut parts = fds.chunks_mut(part);
    let mut ready = parts.next().map_or(0, |first| poll(first, timeout).map_or(0, count));
    for rest in parts {
        ready += poll(rest, PollTimeout::ZERO).map_or(0, count);
    }
    ready
}

fn count(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::poll::PollFlags;

    use super::*;

    #[test]
    fn a_split_set_reports_events_in_every_part() {
        let (r1, w1) = nix::unistd::pipe().unwrap();
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        let (r3, w3) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w1, b"x").unwrap();
        nix::unistd::write(&w3, b"x").unwrap();
        let mut fds: Vec<PollFd> =
            [&r1, &r2, &r3].into_iter().map(|r| PollFd::new(r.as_fd(), PollFlags::POLLIN)).collect();
        // Parts of one: [r1] waited on, [r2] and [r3] checked.
        assert_eq!(poll_split(&mut fds, PollTimeout::ZERO, 1), 2);
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        assert_eq!(ready, [true, false, true]);
        // A limit of 0 polls nothing and reports nothing.
        assert_eq!(poll_split(&mut fds, PollTimeout::ZERO, 0), 0);
    }
}
