//! The `shmpool` command line; uses the library's public API only.
#![deny(unsafe_code)]

pub fn main() -> i32 {
    0
}
