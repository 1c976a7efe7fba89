#!/usr/bin/env bash
# Submits the deviation maps of a prepared list of cases as one job array (one task per line
# of OUT_DIR/cases.tsv). Cases already done are skipped, so re-submitting runs only the rest.
#
#   pedinorm deviation --normdb DB.h5 --cases cases.csv --out-dir OUT_DIR --prepare-only
#   scripts/slurm/submit_deviation.sh DB.h5 OUT_DIR [extra sbatch options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
normdb="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out_dir="$(cd "$2" && pwd)"
shift 2
cases="$(wc -l <"$out_dir/cases.tsv")"
logs="$out_dir/.slurm-logs"
mkdir -p "$logs"
sbatch --parsable --chdir="$out_dir" --output="$logs/%x-%A_%a.log" --array=0-$((cases - 1)) "$@" \
    "$here/deviation_case.sbatch" "$normdb" "$out_dir"
