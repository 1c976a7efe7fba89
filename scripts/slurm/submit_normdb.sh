#!/usr/bin/env bash
# Submits a whole prepared normative-database build as a chain of jobs: the space array (one
# task per bracket), the map array (one per subject), the partial array (one per chunk, with
# --chunk-size) and the reduce job, each depending on the previous (--dependency=afterok,
# cancelled if that dependency fails). Steps already done are skipped by the tasks themselves,
# so re-submitting resumes a build.
#
#   pedinorm normdb build --cohort cohort.csv --template-build T ... --output DB.h5 --prepare-only
#   scripts/slurm/submit_normdb.sh DB.h5.build [extra sbatch options, e.g. --partition=short]
#   # DB.h5 is written by the last job.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build_dir="$(cd "$1" && pwd)"
shift
brackets="$(wc -l <"$build_dir/brackets.txt")"
subjects="$(wc -l <"$build_dir/subjects.txt")"
chunks="$(python3 -c 'import json,sys; size=json.load(open(sys.argv[1]))["parameters"]["chunk_size"]; n=int(sys.argv[2]); print(0 if size is None else -(-n // int(size)))' "$build_dir/normdb.json" "$subjects")"
logs="$build_dir/slurm-logs"
mkdir -p "$logs"
common=(--parsable --chdir="$build_dir" --output="$logs/%x-%A_%a.log" "$@")
after=(--dependency=afterok:JOB --kill-on-invalid-dep=yes)
previous="$(sbatch "${common[@]}" --array=0-$((brackets - 1)) "$here/normdb_space.sbatch" "$build_dir")"
echo "space: array $previous" >&2
previous="$(sbatch "${common[@]}" "${after[@]/JOB/$previous}" --array=0-$((subjects - 1)) \
    "$here/normdb_map.sbatch" "$build_dir")"
echo "map: array $previous" >&2
if [ "$chunks" -gt 0 ]; then
    previous="$(sbatch "${common[@]}" "${after[@]/JOB/$previous}" --array=0-$((chunks - 1)) \
        "$here/normdb_partial.sbatch" "$build_dir")"
    echo "partial: array $previous" >&2
fi
previous="$(sbatch "${common[@]}" "${after[@]/JOB/$previous}" "$here/normdb_reduce.sbatch" "$build_dir")"
echo "reduce: job $previous" >&2
echo "$previous"
