//! The `shmpool` command line.
#![deny(unsafe_code)]

mod cli;
mod workloads;

fn main() {
    std::process::exit(cli::main());
}
