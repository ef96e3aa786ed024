#!/bin/sh
# The checks of the MPI member (shmpool-mpi), for .ci/run. Exits non-zero on any failure.
#
# Needs Open MPI and libclang (Debian: apt-get install -y openmpi-bin libopenmpi-dev
# libclang-dev pkg-config). The tests run mpirun themselves, under `timeout`, with
# --oversubscribe, OMPI_MCA_pml=ob1 and Open MPI's own segments in a temporary directory
# (OMPI_MCA_btl_vader_backing_directory), so the /dev/shm leak checks see only shmpool's.
set -eu
cd "$(dirname "$0")"

# Open MPI refuses to run as root unless told. As root, the two-host tests (network
# namespaces) must run, not skip.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SHMPOOL_MPI_REQUIRE_HOSTS=1
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features testing -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# The reference the outputs are compared with, byte for byte: the engine's `shmpool map`.
cargo build --manifest-path ../Cargo.toml --bin shmpool
SHMPOOL_BIN="$(cd .. && pwd)/target/debug/shmpool"
export SHMPOOL_BIN

# cli (byte-identical outputs, bad input), library (communicators, scatter/gather), faults
# (SIGKILLed, panicking and bound ranks, a panicking kernel; needs the test hooks) and hosts
# (two ranks on two emulated hosts: network namespaces, an rsh agent stand-in).
timeout 900 cargo test --features testing -- --test-threads=2

# Nothing of ours may remain in /dev/shm (the tests check by pid; this is the blunt check,
# valid only when nothing else on the machine uses shmpool at the same time).
if [ -n "${SHMPOOL_CI_EXCLUSIVE:-}" ] && ls /dev/shm/shmpool_* >/dev/null 2>&1; then
    echo "shmpool segments left in /dev/shm:" >&2
    ls -l /dev/shm/shmpool_* >&2
    exit 1
fi
