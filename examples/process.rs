//! `multiprocessing.Process`, as in Python:
//!
//! ```python
//! from multiprocessing import Process
//! def f():
//!     print("just for an example!")
//! if __name__ == "__main__":
//!     p = Process(target=f)
//!     p.start()
//!     p.join()
//!     print("Main process completed")
//! ```
use shmpool::Process;

fn f() {
    println!("just for an example!");
}

fn main() -> shmpool::Result<()> {
    let p = Process::spawn(f)?;
    let status = p.join()?;
    assert!(status.success(), "child failed: {status}");
    println!("Main process completed");
    Ok(())
}
