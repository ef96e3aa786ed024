//! A program without `shmpool::init()`. Python's spawn start method needs
//! `if __name__ == "__main__":` because every spawned child imports the main module again:
//!
//! ```python
//! from multiprocessing import get_context
//! if __name__ == "__main__":   # without this guard, every child would run this block again
//!     with get_context("spawn").Pool(2) as p:
//!         print(p.map(abs, [-1, 2]))
//! ```
//!
//! shmpool needs no guard and no call: a copy of this program that a pool (or
//! `Process::spawn_fn`) starts with `exec` becomes what it was started for before `main` runs.
//! So every start method works here, and `main` runs once: the first and last lines are
//! printed once each.
use shmpool::{Pool, Process, StartMethod};

fn child(n: u8) {
    println!("spawn_fn child: {n}");
}

fn main() -> shmpool::Result<()> {
    println!("main starts");
    for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::ForkServer] {
        let pool = Pool::builder().workers(2).start_method(method).build()?;
        println!("{method:?} pool: {:?}", pool.map(&[-1i32, 2], |x: i32| x.abs())?);
    }
    let p = Process::spawn_fn(child, 7u8)?;
    assert!(p.join()?.success());
    println!("main ran once");
    Ok(())
}
