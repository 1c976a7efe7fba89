#!/usr/bin/env bash
# The README's main command: set up the machine (system libraries, Python tools, reference
# data) and run the whole job on built-in synthetic data. Extra arguments go to `pedinorm demo`
# (e.g. --normals 20 --cases 2). Results land in out/demo; out/demo/normdb.h5 is then ready
# for `pedinorm deviation`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --without-python-package
cargo run --release -- demo --out-dir out/demo "$@"
