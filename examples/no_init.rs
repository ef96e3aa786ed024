//! A program that forgets `shmpool::init()`. Python's spawn start method needs
//! `if __name__ == "__main__":` for the same reason:
//!
//! ```python
//! from multiprocessing import get_context
//! # without the __main__ guard, every spawned child would run this module's top level again
//! with get_context("spawn").Pool(1) as p:
//!     p.map(abs, [-1])
//! ```
//!
//! A pool that starts workers with `exec` (`StartMethod::Spawn`) needs `init()` at the top of
//! `main`: this program gets a clear error instead of a second copy of itself. It prints each
//! error and "main ran once".
use shmpool::{Error, Pool, Process, StartMethod};

fn child(_: u8) {}

fn main() -> shmpool::Result<()> {
    // (no `shmpool::init()` here: that is the bug this example shows)
    match Pool::builder().workers(1).start_method(StartMethod::Spawn).build() {
        Err(e @ Error::InitNotCalled { .. }) => println!("Spawn pool: {e}"),
        Err(e) => return Err(e),
        Ok(_) => panic!("a Spawn pool started without init()"),
    }
    match Process::spawn_fn(child, 0u8) {
        Err(e @ Error::InitNotCalled { .. }) => println!("spawn_fn: {e}"),
        Err(e) => return Err(e),
        Ok(_) => panic!("spawn_fn started without init()"),
    }
    // Fork needs no init(): the program still works.
    let pool = Pool::builder().workers(1).start_method(StartMethod::Fork).build()?;
    println!("Fork pool: {:?}", pool.map(&[-1i32, 2], |x: i32| x.abs())?);
    println!("main ran once");
    Ok(())
}
