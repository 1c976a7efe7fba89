#!/usr/bin/env bash
# Brain masks of whole heads: `pedinorm preprocess --steps mask` on each image (template-free,
# or propagated from a template when TEMPLATE and TEMPLATE_MASK are set), then the mask's
# volume (ml), its Dice overlap with a reference mask when one is given, and the wall time.
#
#   validation/peers/brain_mask_real.sh IMAGE.nii.gz[:REFERENCE_MASK.nii.gz] ...
#   TEMPLATE=t1.nii.gz TEMPLATE_MASK=t1_mask.nii.gz validation/peers/brain_mask_real.sh ...
#
# Prints one tab-separated row per image: name, volume_ml, reference_ml, dice, seconds.
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,9p' "$0" >&2; exit 2; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
(cd "$root" && cargo build -q --bin pedinorm)
binary="${CARGO_TARGET_DIR:-$root/target}/debug/pedinorm"
python="$root/.data/venv/bin/python"
template=()
if [[ -n "${TEMPLATE:-}" ]]; then
    template=(--template "$TEMPLATE" --template-mask "${TEMPLATE_MASK:?TEMPLATE_MASK must name the brain mask of TEMPLATE}")
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'name\tvolume_ml\treference_ml\tdice\tseconds\n'
for argument in "$@"; do
    image="${argument%%:*}"
    reference=""
    [[ "$argument" == *:* ]] && reference="${argument#*:}"
    name="$(basename "$image" .nii.gz)"
    start=$(date +%s.%N)
    "$binary" preprocess "$image" --output "$work/$name.nii.gz" --mask-output "$work/${name}_mask.nii.gz" \
        --steps mask "${template[@]}" >/dev/null
    end=$(date +%s.%N)
    "$python" "$root/validation/peers/mask_overlap.py" "$work/${name}_mask.nii.gz" "$reference" "$name" \
        "$(echo "$end - $start" | bc)"
done
