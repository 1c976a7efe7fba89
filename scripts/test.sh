#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit and end-to-end tests of the whole
# workspace, including those against a real Orthanc and a real one-node Slurm, which this
# script starts on localhost and stops when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests that need Orthanc or Slurm fail instead of passing unrun when the component is missing.
export CI=true
# A one-off build gains nothing from incremental state, which would double the disk it takes.
export CARGO_INCREMENTAL=0

./scripts/setup.sh

started=()
cleanup() {
    for service in "${started[@]}"; do
        "./scripts/services/$service.sh" stop || true
    done
}
trap cleanup EXIT

if [ -x scripts/services/orthanc.sh ]; then
    eval "$(./scripts/services/orthanc.sh start)"
    started+=(orthanc)
fi
if [ -x scripts/services/slurm.sh ]; then
    eval "$(./scripts/services/slurm.sh start)"
    started+=(slurm)
fi

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads=2
