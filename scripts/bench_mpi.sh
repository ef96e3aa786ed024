#!/usr/bin/env bash
# Same-run throughput of the MPI runner against `shmpool map -j 2` on one machine (issue 17),
# and the start-up cost of the MPI layer, medians of RUNS interleaved runs. Run from the
# repository root after
#   cargo build --release --bin shmpool && cargo build --release -p shmpool-mpi
#
# Throughput is the marginal rate: (N - 1000) elements over (wall time on the N-element file -
# wall time on a 1,000-element file) of the same command, so that each command's fixed cost
# (process and pool start-up, MPI_Init and MPI_Finalize for shmpool-mpi) is not counted as
# map time; the fixed costs are printed on their own, with Open MPI's floor (a C program that
# only calls MPI_Init, MPI_Barrier and MPI_Finalize) beside them. Whole-process times and the
# programs' own "in X ms" figures are printed too. Every timed run starts with the page cache
# written back (`sync`), then its output removed, so that no run pays for another's write-back
# or for freeing the file it replaces. In that order: on a VM whose balloon reports free pages
# to the host (Firecracker here), memory freed seconds before a run (a `sync` of 800 MB takes
# that long) is given back to the host, and the run that reuses it pays a host fault per page
# (measured: the 2 x 1 map took 1.16 s instead of 0.2 s with `rm; sync` before each run).
set -euo pipefail
RUNS=${RUNS:-7}
N=${N:-100000000}
bin=target/release
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
export OMPI_MCA_btl_vader_backing_directory="$dir"
expr='sqrt(x) * 1.5 + 0.25'
"$bin/shmpool" gen "$dir/x.npy" --len "$N" --dtype float64 >/dev/null
"$bin/shmpool" gen "$dir/s.npy" --len 1000 --dtype float64 >/dev/null
hello=
if command -v mpicc >/dev/null; then
  printf '#include <mpi.h>\nint main(int c, char **v) { MPI_Init(&c, &v); MPI_Barrier(MPI_COMM_WORLD); MPI_Finalize(); return 0; }\n' >"$dir/h.c"
  mpicc -O2 "$dir/h.c" -o "$dir/hello" && hello="$dir/hello"
fi

declare -A t inner
# run KEY OUTPUT CMD...: wall seconds of CMD into t[KEY], its own "in X ms" into inner[KEY].
run() {
  local key=$1 out=$2 t0 t1 said
  shift 2
  sync
  rm -f "$out"
  t0=$(date +%s.%N)
  said=$("$@" 2>/dev/null)
  t1=$(date +%s.%N)
  t[$key]+="$(awk "BEGIN {print $t1 - $t0}") "
  inner[$key]+="$( (grep -o "in [0-9.]* ms" <<<"$said" || true) | awk "{print \$2 / 1000}") "
}
map() { "$bin/shmpool" map "$1" -o "$2" --expr "$expr" -j 2; }
mpi() { timeout 120 mpirun -np "$1" "$bin/shmpool-mpi" map "$3" -o "$4" --expr "$expr" -j "$2"; }
# twice KEY ...: run, then run again at once as KEY_again (the memory it reuses is then the
# page cache its own previous output left, not another program's).
twice() { local key=$1; shift; run "$key" "$@"; run "${key}_again" "$@"; }
for _ in $(seq "$RUNS"); do
  twice map "$dir/a.npy" map "$dir/x.npy" "$dir/a.npy"
  twice mpi1x2 "$dir/b.npy" mpi 1 2 "$dir/x.npy" "$dir/b.npy"
  twice mpi2x1 "$dir/c.npy" mpi 2 1 "$dir/x.npy" "$dir/c.npy"
  run small_map "$dir/d.npy" map "$dir/s.npy" "$dir/d.npy"
  run small_mpi1x2 "$dir/e.npy" mpi 1 2 "$dir/s.npy" "$dir/e.npy"
  run small_mpi2x1 "$dir/f.npy" mpi 2 1 "$dir/s.npy" "$dir/f.npy"
  run bare_mpirun2 "$dir/none" timeout 120 mpirun -np 2 true
  if [ -n "$hello" ]; then run mpi_hello2 "$dir/none" timeout 120 mpirun -np 2 "$hello"; fi
done
"$bin/shmpool" map "$dir/x.npy" -o "$dir/a.npy" --expr "$expr" -j 2 >/dev/null
cmp "$dir/a.npy" "$dir/b.npy" && cmp "$dir/a.npy" "$dir/c.npy" && echo "outputs byte-identical (N = $N float64)"

median() { tr ' ' '\n' | awk NF | sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
m() { median <<<"${t[$1]}"; }
printf '%-44s %8s %12s\n' "wall time, median of $RUNS" seconds "own figure"
for k in map mpi1x2 mpi2x1 map_again mpi1x2_again mpi2x1_again small_map small_mpi1x2 small_mpi2x1 bare_mpirun2 mpi_hello2; do
  [ -n "${t[$k]:-}" ] || continue
  own=$(median <<<"${inner[$k]:-}")
  printf '%-44s %8.3f %12s\n' "$k" "$(m "$k")" "${own:--}"
done
# rate KEY [SUFFIX]: marginal Melem/s of KEY's runs (SUFFIX _again: the repeated runs).
rate() { awk "BEGIN {print ($N - 1000) / ($(m "$1${2:-}") - $(m "small_$1")) / 1e6}"; }
for again in "" _again; do
  printf 'runs%-7s marginal rate (Melem/s): map -j 2 %.1f, 1 rank x 2 workers %.1f, 2 ranks x 1 worker %.1f\n' \
    "$again" "$(rate map $again)" "$(rate mpi1x2 $again)" "$(rate mpi2x1 $again)"
  printf 'runs%-7s throughput ratio vs shmpool map -j 2: 1 rank x 2 workers %.3f, 2 ranks x 1 worker %.3f\n' \
    "$again" "$(awk "BEGIN {print $(rate mpi1x2 $again) / $(rate map $again)}")" \
    "$(awk "BEGIN {print $(rate mpi2x1 $again) / $(rate map $again)}")"
done
printf 'whole-process ratio (fixed costs included): 1 x 2 %.3f, 2 x 1 %.3f\n' \
  "$(awk "BEGIN {print $(m map) / $(m mpi1x2)}")" "$(awk "BEGIN {print $(m map) / $(m mpi2x1)}")"
printf 'start-up cost of the MPI layer (small file, vs shmpool map): 1 x 2 %+.3f s, 2 x 1 %+.3f s' \
  "$(awk "BEGIN {print $(m small_mpi1x2) - $(m small_map)}")" "$(awk "BEGIN {print $(m small_mpi2x1) - $(m small_map)}")"
if [ -n "$hello" ]; then
  printf '; Open MPI alone (MPI_Init + MPI_Barrier + MPI_Finalize, 2 ranks) %.3f s' "$(m mpi_hello2)"
fi
echo
