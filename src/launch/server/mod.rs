//! The fork server: a single-threaded template process that forks workers on request, so a
//! multi-threaded program gets fork's speed without fork's hazard (its children never inherit
//! another thread's locks: the server has no other threads).
//!
//! One server per process, started on first need (exec'd, and turned into the server by the
//! start-up hook, when the program runs several threads or called `init()`; else forked while
//! the program is still single-threaded). The program keeps the *control* socket;
//! each pool opens its own *connection* (a socket pair whose far end travels over the control
//! socket with `SCM_RIGHTS`) and asks on it for workers, sending the worker's socket along.
//! The server answers with the new pid and, since the pool cannot `waitpid` a process that is
//! not its child, reports every exit status of that connection's workers (it watches each
//! through a pidfd and reaps it; not `SIGCHLD`, which another thread of an exec'd server's
//! process — libtest's, in the test suite — could take). The pool still notices deaths at once through pidfds.
//!
//! Lifetimes: a connection that closes (its pool is gone) has its remaining workers killed; when
//! the control socket closes (the program is gone) the server kills every worker and exits.
//! Workers also have `PR_SET_PDEATHSIG` tied to the server, so they never outlive it, and the
//! server has it tied to the program's thread that started it (the program's only thread for a
//! forked server, a keeper thread for an exec'd one: [`on_keeper_thread`]), so that even a
//! stopped server, which reads no end-of-file, dies with the program. A server that a pool
//! waits for in vain (stopped, or silent past `client::ANSWER_TIMEOUT`) is killed and replaced.
//!
//! Files: `wire` (the records), `client` (the program's side), `serve` (the server's side),
//! `keeper` (the thread an exec'd server is tied to). `client` and `serve` both use `wire`
//! and never each other.

mod client;
mod keeper;
mod serve;
mod wire;

#[cfg(any(test, feature = "testing"))]
pub(crate) use client::pid;
pub(crate) use client::{connect, Connection};
pub(crate) use keeper::on_keeper_thread;
pub(crate) use serve::{serve, start_forked};
