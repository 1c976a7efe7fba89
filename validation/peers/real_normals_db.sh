#!/usr/bin/env bash
# A normative database built from real normal brains (not from the synthetic generator): one
# template of every normal (`--brackets FILE`, one bracket holding their ages), then the
# database with the JHU atlas carried onto it, exactly as a network's database B would be built
# from the command line. Score held-out real brains against it with real_brains.py.
#
#   validation/peers/real_normals_db.sh COHORT.csv BRACKETS.json OUT [PEDINORM_BINARY]
#
# COHORT.csv: `path,age,sex,site,id` (see docs/templates.md), brain-extracted or whole-head T1w
# images. Writes OUT/templates/ (the template build) and OUT/normdb.h5. Template and database
# at 2 mm (the demo's resolution), 2 deformable template iterations, default registration.
# Needs .data/mni and .data/atlases from scripts/setup.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cohort="${1:?usage: $0 COHORT.csv BRACKETS.json OUT [pedinorm]}"
brackets="${2:?usage: $0 COHORT.csv BRACKETS.json OUT [pedinorm]}"
out="${3:?usage: $0 COHORT.csv BRACKETS.json OUT [pedinorm]}"
bin="${4:-${CARGO_TARGET_DIR:-$here/target}/release/pedinorm}"
data="$here/.data"
[ -x "$bin" ] || { echo "$bin: no pedinorm binary (cargo build --release)" >&2; exit 2; }
for f in "$data/mni/t1.nii.gz" "$data/atlases/JHU-WhiteMatter-labels-2mm.nii.gz"; do
    [ -f "$f" ] || { echo "$f: missing, run scripts/setup.sh" >&2; exit 2; }
done
mkdir -p "$out"

start=$(date +%s)
"$bin" template build --cohort "$cohort" --brackets "$brackets" --out-dir "$out/templates" \
    --template-spacing 2 --iterations 2 --jobs 2
templates_done=$(date +%s)

builds=()
for dir in "$out"/templates/bracket-*; do builds+=(--template-build "$dir"); done
"$bin" normdb build --cohort "$cohort" "${builds[@]}" --output "$out/normdb.h5" \
    --atlas-labels "$data/atlases/JHU-WhiteMatter-labels-2mm.nii.gz" \
    --atlas-names "$data/atlases/JHU-WhiteMatter-labels-2mm.nii.txt" \
    --atlas-reference "$data/mni/t1.nii.gz"
end=$(date +%s)
echo "templates: $((templates_done - start)) s; normative database: $((end - templates_done)) s"
"$bin" normdb info "$out/normdb.h5"
