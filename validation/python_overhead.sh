#!/usr/bin/env bash
# The cost of registering from Python instead of the command line: `pedinorm register` and
# `pedinorm.register` (+ `save`) on the same 2 mm pair (validation/peers/registration_pairs.py,
# pair0), both release builds, 2 threads, whole processes timed, runs alternated; prints each
# run and the medians. Usage: validation/python_overhead.sh [WORK_DIR] (default
# work/python_overhead); RUNS=N sets the runs of each (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-work/python_overhead}
runs=${RUNS:-3}
python=.data/venv/bin/python
mkdir -p "$work"
target=$(cargo metadata --format-version 1 --no-deps | "$python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

cargo build --release --quiet --bin pedinorm
# The release extension goes into a folder of its own, ahead of the installed (dev) one.
rm -rf "$work/wheel" "$work/site"
# A wheel for this machine only: its shared libraries (HDF5) are not bundled.
.data/venv/bin/maturin build --quiet --release --auditwheel skip --manifest-path python/Cargo.toml --out "$work/wheel"
.data/venv/bin/pip install --quiet --disable-pip-version-check --no-deps --target "$work/site" "$work"/wheel/*.whl
if [ ! -f "$work/pairs/pair0/moving.nii.gz" ]; then
    "$python" validation/peers/registration_pairs.py make --resolution 2 --count 1 --out "$work/pairs"
fi

fixed="$work/pairs/fixed.nii.gz"
moving="$work/pairs/pair0/moving.nii.gz"
seconds() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }
cli_times=(); py_times=()
for run in $(seq "$runs"); do
    cli=$(seconds "$target/release/pedinorm" register --fixed "$fixed" --moving "$moving" \
        --output "$work/cli_" --threads 2)
    py=$(seconds env PYTHONPATH="$work/site" "$python" -c "
import sys, pedinorm
assert pedinorm.__file__.startswith(sys.argv[3]), pedinorm.__file__
pedinorm.register(sys.argv[1], sys.argv[2], threads=2).save(sys.argv[4])
" "$fixed" "$moving" "$work/site" "$work/py_")
    echo "run $run: command line ${cli} s, Python ${py} s"
    cli_times+=("$cli"); py_times+=("$py")
done
cmp "$work/cli_affine.txt" "$work/py_affine.txt" && echo "the affines written are identical"
"$python" - "${cli_times[*]}" "${py_times[*]}" <<'PY'
import statistics, sys
cli = [float(x) for x in sys.argv[1].split()]
py = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(cli), statistics.median(py)
print(f"median: command line {a:.2f} s, Python {b:.2f} s, Python / command line = {b / a:.3f} ({100 * (b / a - 1):+.1f} %)")
PY
