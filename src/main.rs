//! The `shmpool` command line.
#![deny(unsafe_code)]

mod cli;
mod workloads;

fn main() {
    // Workers of `Spawn` pools (and the fork server, started from a threaded process) are
    // copies of this binary: `init` turns them into what they were started for.
    shmpool::init();
    std::process::exit(cli::main());
}
