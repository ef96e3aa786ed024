#!/usr/bin/env bash
# The Python package's CI: lint the crate (clippy, warnings denied), build and install it into a
# venv under target/, then run pytest.
# Run from anywhere (it finds the repository root itself); .ci/run does not call it yet.
# Exits non-zero on any failure; pytest's exit code 5 ("no tests collected") is a failure too.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/target/pyvenv"
python="${PYTHON:-python3}"

# The crate is a workspace member outside default-members: lint it here, warnings denied.
nice -n 5 cargo clippy -p shmpool-python --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" nice -n 5 cargo doc --no-deps --quiet -p shmpool-python

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade "maturin>=1.16,<2" numpy pytest cloudpickle
# maturin is the PEP 517 backend: this builds the abi3 wheel (release) and installs it.
"$venv/bin/pip" install --quiet --force-reinstall --no-deps ./python

# Run from the tests' directory so that `import shmpool` finds the installed package, never the
# source tree (which has no compiled extension).
cd "$root/python/tests"
set +e
"$venv/bin/python" -I -m pytest -q -p no:cacheprovider "$root/python/tests"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "python/ci.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
