#!/usr/bin/env bash
# A real individual's brain prepared as a base brain of the synthetic generator
# (`pedinorm synth|demo --extra-base DIR`): the skull-stripped T1w image is aligned affinely to
# the MNI base (mutual information) and resampled onto its grid, then segmented into grey and
# white matter with the MNI tissue maps as priors. Writes DIR/t1.nii.gz, DIR/gm.nii.gz,
# DIR/wm.nii.gz (and DIR/work/ with the transform and the segmentation's other outputs).
#
#   validation/peers/real_base.sh BRAIN.nii.gz DIR [PEDINORM_BINARY]
#
# BRAIN must be brain-extracted (zero outside the brain); for a whole head run
# `pedinorm preprocess` first. Needs the MNI base of scripts/setup.sh (.data/mni) and the
# Python venv (.data/venv) for the CSF prior.
set -euo pipefail
cd "$(dirname "$0")/../.."
brain="${1:?usage: $0 BRAIN.nii.gz DIR [pedinorm]}"
out="${2:?usage: $0 BRAIN.nii.gz DIR [pedinorm]}"
bin="${3:-${CARGO_TARGET_DIR:-target}/release/pedinorm}"
mni=.data/mni
[ -x "$bin" ] || { echo "$bin: no pedinorm binary (cargo build --release)" >&2; exit 2; }
[ -f "$brain" ] || { echo "$brain: no such image" >&2; exit 2; }
[ -f "$mni/t1.nii.gz" ] || { echo "$mni/t1.nii.gz: missing, run scripts/setup.sh" >&2; exit 2; }
work="$out/work"
mkdir -p "$work"

"$bin" register --fixed "$mni/t1.nii.gz" --moving "$brain" --transform affine --output "$work/" >/dev/null

# Priors: the MNI grey and white matter maps and their complement inside the MNI brain.
.data/venv/bin/python - "$mni" "$work" <<'EOF'
import sys
import nibabel as nib
import numpy as np
mni, work = sys.argv[1], sys.argv[2]
t1 = nib.load(f"{mni}/t1.nii.gz")
gm = nib.load(f"{mni}/gm.nii.gz").get_fdata()
wm = nib.load(f"{mni}/wm.nii.gz").get_fdata()
scale = max(gm.max(), wm.max(), 1.0)
gm, wm = gm / scale if scale > 1.0 + 1e-3 else gm, wm / scale if scale > 1.0 + 1e-3 else wm
inside = t1.get_fdata() > 0.02 * t1.get_fdata().max()
csf = np.where(inside, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0)
for name, data in (("csf", csf), ("gm", gm), ("wm", wm)):
    nib.save(nib.Nifti1Image(data.astype(np.float32), t1.affine), f"{work}/prior_{name}.nii.gz")
EOF

"$bin" segment --image "$work/warped.nii.gz" \
    --priors "$work/prior_csf.nii.gz,$work/prior_gm.nii.gz,$work/prior_wm.nii.gz" \
    --tissues csf,gm,wm --out-dir "$work/segment" >/dev/null
cp "$work/warped.nii.gz" "$out/t1.nii.gz"
cp "$work/segment/gm.nii.gz" "$out/gm.nii.gz"
cp "$work/segment/wm.nii.gz" "$out/wm.nii.gz"
echo "$out: t1.nii.gz gm.nii.gz wm.nii.gz"
