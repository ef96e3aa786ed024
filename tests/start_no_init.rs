//! Programs that never call `shmpool::init()`: this test binary is one (libtest's `main` calls
//! nothing of shmpool), and every start method works in it (see `tests/start_methods.rs`). Here:
//! what a copy of the program that shmpool did *not* start correctly does, and what a parent
//! reports when its child never answers.

mod common;

use std::process::Command;
use std::time::Duration;

use shmpool::{Error, Pool, StartMethod};

#[test]
fn a_copy_whose_marker_names_no_parent_socket_exits_before_main() {
    // The marker in shmpool's format, but descriptor 0 is not a socket its parent made: the
    // start-up hook ends the process before libtest's `main` prints anything.
    let out = Command::new(std::env::current_exe().unwrap())
        .env("SHMPOOL_CHILD", "0:0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(86), "{out:?}");
    assert!(out.stdout.is_empty(), "main ran: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not its parent's"), "{out:?}");
}

#[test]
fn a_variable_of_that_name_in_another_format_is_not_a_marker() {
    // Not shmpool's format: an ordinary run of the program (here: libtest listing its tests).
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--list", "a_variable_of_that_name"])
        .env("SHMPOOL_CHILD", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("a_variable_of_that_name_in_another_format_is_not_a_marker"));
}

#[test]
fn a_spawned_child_that_exits_without_a_handshake_is_a_start_failure() {
    let _serial = common::serial();
    common::watchdog(Duration::from_secs(60), || {
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
