//! The `shmpool` command line.
#![deny(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::main());
}
