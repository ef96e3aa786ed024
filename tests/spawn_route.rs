//! The public spawn route (`shmpool::set_spawn_route`), which programs that cannot call
//! `init()` at the top of their own `main` use (the Python package: an interpreter loading the
//! extension). Here the route sends exec'd children to the scenario `route_entry`
//! (tests/common/scenario.rs), which calls `shmpool::init()`; counting as `init()`, it also makes the fork server the default
//! in a threaded process. A routed child takes its role in `init()` only: the start-up hook
//! leaves it alone (in an extension module the hook runs inside the interpreter's `dlopen`).

mod common;

scenarios!(route_entry);

use std::time::Duration;

use shmpool::{ErrorKind, Pool, StartMethod};

/// The entry point the route sends children to (a scenario).
fn route_entry() {
    shmpool::init();
}

fn route() {
    shmpool::set_spawn_route(None, common::scenario::args("route_entry"));
}

#[test]
fn children_started_by_exec_follow_the_public_route() {
    let _serial = common::serial();
    route();
    common::watchdog(Duration::from_secs(120), || {
        for method in [StartMethod::Spawn, StartMethod::ForkServer] {
            let pool = Pool::builder().workers(2).start_method(method).build().unwrap();
            let xs: Vec<f64> = (0..10_000).map(f64::from).collect();
            let ys = pool.map(&xs, |x: f64| x * 2.0 + 1.0).unwrap();
            assert!(xs.iter().zip(&ys).all(|(x, y)| *y == x * 2.0 + 1.0), "{method:?}");
            assert_eq!(pool.start_method(), method);
        }
    });
}

#[test]
fn the_route_counts_as_init_so_a_threaded_program_defaults_to_the_fork_server() {
    let _serial = common::serial();
    route();
    // libtest runs this on a thread of its own: the process is multi-threaded.
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.start_method(), StartMethod::ForkServer);
    assert_eq!(pool.map(&[3i32], |x: i32| x + 1).unwrap(), [4]);
}

#[test]
fn a_routed_child_takes_its_role_in_init_never_in_the_start_up_hook() {
    let _serial = common::serial();
    // The route runs the test binary with a filter that matches no test: its `main` runs, calls
    // no `init()` and exits 0. Had the start-up hook taken the child's role before `main`, the
    // worker would have started.
    shmpool::set_spawn_route(None, ["no_such_test_anywhere", "--exact"]);
    let err = common::watchdog(Duration::from_secs(120), || {
        Pool::builder().workers(1).start_method(StartMethod::Spawn).build().map(|_| ()).unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Startup, "{err}");
    route();
    let pool = Pool::builder().workers(1).start_method(StartMethod::Spawn).build().unwrap();
    assert_eq!(pool.map(&[1u8, 2], |x: u8| x * 3).unwrap(), [3, 6]);
}
