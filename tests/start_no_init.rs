//! A program that does not call `shmpool::init()`: its parent refuses to spawn (see
//! `examples/no_init.rs`, checked in `tests/examples.rs`), and a spawned child whose `main`
//! reaches shmpool without `init()` exits at once with a distinct code, before any later side
//! effect of `main`, so its parent reports `Error::InitNotCalled` instead of a second copy of
//! the program running on.
//!
//! Here the children are routed to `child_that_forgot_init`, which stands for such a `main`: its
//! first shmpool call must end the process before it writes its marker file.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use shmpool::{Error, Pool, Process, StartMethod};

fn marker_file() -> PathBuf {
    std::env::temp_dir().join(format!("shmpool-no-init-{}", std::os::unix::process::parent_id()))
}

/// A `main` that forgot `init()`: builds a pool, then has a side effect.
#[test]
#[ignore = "entry point of spawned children that forgot init(), run by the other tests"]
fn child_that_forgot_init() {
    let _ = Pool::new(1);
    std::fs::write(marker_file(), "a second copy of main ran on").unwrap();
}

fn route() {
    // Marks this process as calling init(), so that the parent does spawn.
    shmpool::testing::route_spawned_children(["child_that_forgot_init", "--exact", "--ignored", "-q"]);
}

fn nothing(_: u8) {}

#[test]
fn a_spawned_child_without_init_exits_before_its_side_effects_and_the_parent_says_why() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        route();
        for method in [StartMethod::Spawn, StartMethod::ForkServer] {
            match Pool::builder().workers(2).start_method(method).build() {
                Err(e @ Error::InitNotCalled { .. }) => {
                    assert!(e.to_string().contains("call shmpool::init() at the top of main"), "{e}");
                }
                other => panic!("{method:?}: expected InitNotCalled, got {other:?}"),
            }
        }
        let p = Process::spawn_fn(nothing, 0u8).unwrap();
        assert_eq!(p.join().unwrap().code(), Some(86), "the child's distinct exit code");
        assert!(!marker_file().exists(), "a spawned child ran main past its first shmpool call");
    });
    common::assert_nothing_leaked();
}

#[test]
fn a_spawned_child_that_exits_without_a_handshake_is_a_start_failure() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
        route();
        // Not a shmpool program at all: it exits at once, without reading its start-up record.
        let r = Pool::builder().workers(1).start_method(StartMethod::Spawn).spawn_exe_for_test("/bin/true").build();
        match r {
            Err(e @ Error::StartFailed { .. }) => {
                assert!(e.to_string().contains("exited with code 0 before its handshake"), "{e}");
            }
            other => panic!("expected StartFailed, got {other:?}"),
        }
    });
    common::assert_nothing_leaked();
}
