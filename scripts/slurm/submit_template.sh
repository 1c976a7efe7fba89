#!/usr/bin/env bash
# Submits a whole prepared template build as a chain of jobs: init, then for each iteration
# a map job array (one task per subject) and a reduce job, each depending on the previous
# (--dependency=afterok, cancelled if that dependency fails). Steps already done are skipped
# by the tasks themselves, so re-submitting resumes a build.
#
#   pedinorm template build --cohort cohort.csv --out-dir OUT --prepare-only   # prints BUILD_DIRs
#   scripts/slurm/submit_template.sh BUILD_DIR [extra sbatch options, e.g. --partition=short]
#   # when the last job has finished:
#   pedinorm template finalize --build-dir BUILD_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build_dir="$(cd "$1" && pwd)"
shift
iterations="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"]["iterations"])' "$build_dir/build.json")"
subjects="$(wc -l <"$build_dir/subjects.txt")"
logs="$build_dir/slurm-logs"
mkdir -p "$logs"
common=(--parsable --chdir="$build_dir" --output="$logs/%x-%A_%a.log" "$@")
previous="$(sbatch "${common[@]}" "$here/template_init.sbatch" "$build_dir")"
echo "init: job $previous" >&2
for ((k = 0; k <= iterations; k++)); do
    map="$(sbatch "${common[@]}" --dependency=afterok:"$previous" --kill-on-invalid-dep=yes \
        --array=0-$((subjects - 1)) "$here/template_map.sbatch" "$build_dir" "$k")"
    previous="$(sbatch "${common[@]}" --dependency=afterok:"$map" --kill-on-invalid-dep=yes \
        "$here/template_reduce.sbatch" "$build_dir" "$k")"
    echo "iteration $k: map array $map, reduce $previous" >&2
done
echo "$previous"
