//! The `shmpool` command line.
#![deny(unsafe_code)]
// No function over 80 lines outside tests (threshold in the workspace's clippy.toml).
#![warn(clippy::too_many_lines)]

mod cli;
mod workloads;

fn main() {
    // Copies of this binary that shmpool starts become workers before `main`; calling `init`
    // also makes the fork server an exec'd, fresh image from the start (the CLI maps big
    // files: a forked server would share their pages copy-on-write).
    shmpool::init();
    std::process::exit(cli::main());
}
