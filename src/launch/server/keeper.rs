//! The keeper thread: a thread that lives as long as the process, from which an exec'd fork
//! server is spawned so that its `PR_SET_PDEATHSIG` fires only when the program ends.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};

/// A job for the keeper thread.
type KeeperJob = Box<dyn FnOnce() + Send>;

/// This process's keeper thread: (the process it belongs to, the way to hand it jobs).
/// Published once per process and leaked (a forked child makes its own: threads do not survive
/// a fork), like the fork server's registry.
static KEEPER: std::sync::atomic::AtomicPtr<(u32, std::sync::mpsc::Sender<KeeperJob>)> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// Runs `job` on this process's keeper thread, a thread that does nothing else and lives as
/// long as the process, and returns its result.
///
/// The exec'd fork server sets `PR_SET_PDEATHSIG` (SIGKILL) so that it dies with the program
/// even while it is stopped (a stopped process never sees its socket close). The kernel sends
/// that signal when the *thread* that spawned it exits, so it is spawned from this thread,
/// never from the (perhaps short-lived) thread that builds a pool; from the main thread the
/// job runs at once, on it. The keeper is started only when a thread other than the main
/// one first starts an exec'd server (the program is multi-threaded then anyway). That covers every end of
/// the program, SIGKILL and `exec` included (both end this thread). Not covered: a program
/// that is itself stopped keeps its server (it is not gone).
///
/// # Errors
///
/// [`Error::Os`] when the thread cannot be started.
pub(crate) fn on_keeper_thread<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    use std::sync::mpsc;
    if nix::unistd::gettid() == nix::unistd::getpid() {
        // The main thread lives as long as the program: no need for another thread (which
        // would make a program that is otherwise single-threaded a multi-threaded one, and so
        // change the start method its later pools default to).
        return Ok(job());
    }
    let me = std::process::id();
    let keeper = loop {
        let p = KEEPER.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in KEEPER came from `Box::into_raw` below and is never
        // freed (published once per process, then leaked on purpose).
        if let Some(k) = unsafe { p.as_ref() } {
            if k.0 == me {
                break k;
            }
        }
        let (tx, rx) = mpsc::channel::<KeeperJob>();
        std::thread::Builder::new()
            .name("shmpool-keeper".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::os("start the fork server's keeper thread", e))?;
        let fresh = Box::into_raw(Box::new((me, tx)));
        if KEEPER.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // SAFETY: just published; never freed (see above).
            break unsafe { &*fresh };
        }
        // Another thread published first: ours ends once its channel is dropped here.
        // SAFETY: `fresh` was never published; this is its only owner.
        drop(unsafe { Box::from_raw(fresh) });
    };
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let gone = || Error::os("the fork server's keeper thread", std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    keeper
        .1
        .send(Box::new(move || {
            let _ = done_tx.send(job());
        }))
        .map_err(|_| gone())?;
    done_rx.recv().map_err(|_| gone())
}
