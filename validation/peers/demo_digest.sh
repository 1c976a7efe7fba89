#!/usr/bin/env bash
# Builds pedinorm (dev profile) and compares the digests of a small fixed-seed demo run with
# validation/golden/demo.sha256 (see demo_digest.py). A pure refactoring leaves them unchanged;
# a change that means to change numbers rewrites them with --update in the same commit.
#
#   validation/peers/demo_digest.sh --check     # exit 1 and name the outputs that differ
#   validation/peers/demo_digest.sh --update    # rewrite the golden file
#   validation/peers/demo_digest.sh             # print the digests
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --bin pedinorm
binary="${CARGO_TARGET_DIR:-target}/debug/pedinorm"
golden=validation/golden/demo.sha256
work="work/digest-$$"
trap 'rm -rf "$work"' EXIT
case "${1:-}" in
    --check) mode=(--check "$golden") ;;
    --update) mode=(--update "$golden") ;;
    "") mode=() ;;
    *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;;
esac
.data/venv/bin/python validation/peers/demo_digest.py --pedinorm "$binary" --work "$work" "${mode[@]}"
