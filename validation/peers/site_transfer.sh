#!/usr/bin/env bash
# Transfer to an unseen scanner site: a normative database built from normals of sites S1–S3
# (the README demo's cohort, 0–17 years, every default bracket), scored on normals and cases of
# a site S4 it has never seen (other contrast, blur, noise, bias and anatomy seeds), once with
# the site-aware model and once with every site pooled as one. Prints the false-positive and
# detection figures of both side by side (summary.json of each run is kept in WORK/on and
# WORK/off). The second run reuses the first run's templates (resumable template builds).
#
#   validation/peers/site_transfer.sh WORK [extra pedinorm demo arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:?usage: $0 WORK [demo arguments]}"
shift
cargo build -q --release --bin pedinorm
bin="${CARGO_TARGET_DIR:-target}/release/pedinorm"
common=(--held-out-normals 14 --held-out-cases 6 --cases 6 "$@")
mkdir -p "$work"
"$bin" demo --out-dir "$work/run" "${common[@]}" >"$work/on.log" 2>&1
mkdir -p "$work/on" && cp "$work/run/summary.json" "$work/on/summary.json"
"$bin" demo --out-dir "$work/run" "${common[@]}" --no-site-model >"$work/off.log" 2>&1
mkdir -p "$work/off" && cp "$work/run/summary.json" "$work/off/summary.json"
.data/venv/bin/python validation/peers/site_transfer_table.py "$work"
