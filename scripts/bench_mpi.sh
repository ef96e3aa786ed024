#!/usr/bin/env bash
# Same-run throughput of the MPI runner against `shmpool map -j 2` on one machine (issue 17):
# W1 over a 50M float64 file, medians of RUNS interleaved runs, plus the start-up cost of the
# MPI layer (a 1,000-element file). Run from the repository root after
#   cargo build --release --bin shmpool && cargo build --release -p shmpool-mpi
set -euo pipefail
RUNS=${RUNS:-5}
N=${N:-50000000}
bin=target/release
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
export OMPI_MCA_btl_vader_backing_directory="$dir"
expr='sqrt(x) * 1.5 + 0.25'
"$bin/shmpool" gen "$dir/x.npy" --len "$N" --dtype float64 >/dev/null
"$bin/shmpool" gen "$dir/small.npy" --len 1000 --dtype float64 >/dev/null

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); awk "BEGIN {print $t1 - $t0}"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

declare -A t
for r in $(seq "$RUNS"); do
  t[map]+="$(secs "$bin/shmpool" map "$dir/x.npy" -o "$dir/a.npy" --expr "$expr" -j 2 --quiet) "
  t[mpi1x2]+="$(secs timeout 120 mpirun -np 1 "$bin/shmpool-mpi" map "$dir/x.npy" -o "$dir/b.npy" --expr "$expr" -j 2) "
  t[mpi2x1]+="$(secs timeout 120 mpirun -np 2 "$bin/shmpool-mpi" map "$dir/x.npy" -o "$dir/c.npy" --expr "$expr" -j 1) "
  t[small_map]+="$(secs "$bin/shmpool" map "$dir/small.npy" -o "$dir/d.npy" --expr "$expr" -j 1 --quiet) "
  t[small_mpi2]+="$(secs timeout 120 mpirun -np 2 "$bin/shmpool-mpi" map "$dir/small.npy" -o "$dir/e.npy" --expr "$expr" -j 1) "
  t[bare_mpirun2]+="$(secs timeout 120 mpirun -np 2 true) "
done
cmp "$dir/a.npy" "$dir/b.npy" && cmp "$dir/a.npy" "$dir/c.npy" && echo "outputs byte-identical"
m() { echo "${t[$1]}" | tr ' ' '\n' | grep . | median; }
printf '%-34s %8s\n' "what (median of $RUNS)" seconds
for k in map mpi1x2 mpi2x1 small_map small_mpi2 bare_mpirun2; do printf '%-34s %8.3f\n' "$k" "$(m "$k")"; done
printf 'throughput ratio vs shmpool map -j 2: 1 rank x 2 workers %.3f, 2 ranks x 1 worker %.3f\n' \
  "$(awk "BEGIN {print $(m map) / $(m mpi1x2)}")" "$(awk "BEGIN {print $(m map) / $(m mpi2x1)}")"
