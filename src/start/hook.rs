//! The start-up hook: an ELF constructor (an entry in `.init_array`) that runs in every process
//! of every executable linking shmpool, before `main`. In an ordinary process it reads one
//! environment variable and returns. In a copy of the program that shmpool started with `exec`
//! (proved by `spawn::take_marker`: its marker, a socket made by its parent, a one-time token)
//! it becomes the worker, fork server or `Process::spawn_fn` child it was started for and exits
//! without ever returning, so the program's `main` (libtest's harness, in a test binary) never
//! runs there. That is what makes `shmpool::init()` unnecessary, in tests included.
//!
//! What is sound in it (Linux, glibc): the dynamic loader has relocated the program and run
//! every shared library's constructors, and libc (malloc, stdio, `environ`) is initialised;
//! std works, except what its runtime sets up at the entry of `main` (SIGPIPE ignored: done by
//! the child path itself; the main thread's name; the stack-overflow message, so an overflow in
//! a worker is a plain SIGSEGV, which the pool reports like any crash). The environment is read
//! through `std::env`, which reads libc's `environ`, initialised before any constructor. The
//! process runs a single thread, unless another constructor started one. Constructors of the
//! executable that come after this one in `.init_array` do not run in a child (a statically
//! linked C++ library's globals, say): kernels that need them should initialise them in
//! `PoolBuilder::worker_init`. Unwinding out of the hook would abort, so the child path catches
//! every panic.
//!
//! Hand-written rather than the `ctor` crate (well kept, but a proc macro and two crates for
//! one static): the whole mechanism is the one `#[used]` static below.
#![allow(unsafe_code)]

/// The entry glibc calls before `main` (it passes `argc`, `argv` and `envp`, which the C ABI
/// lets a function that takes no arguments ignore).
extern "C" fn start_hook() {
    // A panic must not unwind out of an `extern "C"` function (it would abort the program).
    // The ordinary path cannot panic and the child path catches and exits; a panic anywhere
    // else on the way must not let a spawned child run on into `main` either.
    if std::panic::catch_unwind(|| super::become_child_if_started(false)).is_err() {
        crate::launch::fork::exit_now(crate::launch::fork::PANIC_EXIT_CODE);
    }
}

// `#[used]` keeps the static even though nothing reads it, and rustc passes such statics of
// dependencies to the linker, so the entry is in every executable linking shmpool. The section
// without a priority suffix is where `__attribute__((constructor))` and the `ctor` crate put
// theirs; std's own argument capture sits in `.init_array.00099`, which runs first.
// SAFETY (of the section): `.init_array` holds pointers to functions that take the C start-up
// arguments and return nothing; `start_hook` is such a function.
#[used]
#[link_section = ".init_array"]
static START_HOOK: extern "C" fn() = start_hook;
