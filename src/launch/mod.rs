//! How shmpool starts processes: the plumbing under `worker`, `start` and the public
//! [`Process`](crate::Process) API, never called by users directly.
//!
//! - `fork`: forking a child that never returns into the caller's code (`_exit`, a panic hook
//!   that takes no lock), pidfds, `PR_SET_PDEATHSIG`, dropping inherited mappings and
//!   descriptors, the embedding program's fork hooks;
//! - `spawn`: starting a fresh copy of the program with `exec` (`posix_spawn`), the marker and
//!   one-time token that make it a child of ours, and checking it runs the very same binary;
//! - `server`: the fork server, a single-threaded template process that forks workers on
//!   request for multi-threaded programs.
//!
//! Layering, one-way: `server` → `fork` (and `ipc`'s records), `spawn` → `fork` (its exit
//! primitives); `fork` uses neither. Nothing here knows what a worker does: its body is a `fn` handed in.

pub(crate) mod fork;
pub(crate) mod server;
pub(crate) mod spawn;
