#!/bin/sh
# The checks of the MPI member (shmpool-mpi), for .ci/run. Exits non-zero on any failure.
#
# Needs Open MPI and libclang (Debian: apt-get install -y openmpi-bin libopenmpi-dev
# libclang-dev pkg-config). The tests run mpirun themselves, under `timeout`, with
# --oversubscribe, OMPI_MCA_pml=ob1 and Open MPI's own segments in a temporary directory
# (OMPI_MCA_btl_vader_backing_directory), so the /dev/shm leak checks see only shmpool's.
set -eu
# A member of the root workspace: one Cargo.lock and one target/ at the root; every cargo
# command names the package (it is outside default-members).
cd "$(dirname "$0")/.."

# Open MPI refuses to run as root unless told. As root, the two-host tests (network
# namespaces) must run, not skip.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SHMPOOL_MPI_REQUIRE_HOSTS=1
fi

cargo fmt --check -p shmpool-mpi
cargo clippy -p shmpool-mpi --all-targets -- -D warnings
cargo clippy -p shmpool-mpi --all-targets --features testing -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc -p shmpool-mpi --no-deps

# The reference the outputs are compared with, byte for byte: the engine's `shmpool map`.
cargo build -p shmpool --bin shmpool
SHMPOOL_BIN="$(pwd)/target/debug/shmpool"
export SHMPOOL_BIN

# cli, inputs, messages, output_names, progress (byte-identical outputs, named inputs, bad input, shmpool map's
# messages), library and library_misuse (communicators, scatter/gather, misuse), waits (a rank
# that waits for another sleeps), scenarios (a rank body's exit code ends the job), faults,
# setup_faults and launcher_faults (SIGKILLed, panicking and bound ranks, signalled mpirun;
# need the test hooks) and hosts (two ranks on two emulated hosts: network namespaces, an rsh
# agent stand-in). Every job runs under a watchdog (`timeout`): a hang fails, never waits.
timeout 600 cargo test -p shmpool-mpi --features testing -- --test-threads=2

# Nothing of ours may remain in /dev/shm (the tests check by pid; this is the blunt check,
# valid only when nothing else on the machine uses shmpool at the same time).
if [ -n "${SHMPOOL_CI_EXCLUSIVE:-}" ] && ls /dev/shm/shmpool_* >/dev/null 2>&1; then
    echo "shmpool segments left in /dev/shm:" >&2
    ls -l /dev/shm/shmpool_* >&2
    exit 1
fi
