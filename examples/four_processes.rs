//! Four processes in parallel, as in Python:
//!
//! ```python
//! from multiprocessing import Process
//! def f(i): print(f"Process {i} prints: {i}")
//! ps = [Process(target=f, args=(i,)) for i in range(4)]
//! for p in ps: p.start()
//! for p in ps: p.join()
//! print("All processes completed")
//! ```
use shmpool::Process;

fn main() -> shmpool::Result<()> {
    // Start all four first, then join them all, so they run at the same time.
    let processes = (0..4)
        .map(|i| Process::spawn(move || println!("Process {i} prints: {i}")))
        .collect::<shmpool::Result<Vec<_>>>()?;
    for p in &processes {
        let status = p.join()?;
        assert!(status.success(), "process {} failed: {status}", p.pid());
    }
    println!("All processes completed");
    Ok(())
}
