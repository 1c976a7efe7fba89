"""One row of brain_mask_real.sh: name, mask volume (ml), reference volume (ml), Dice, seconds.

usage: mask_overlap.py MASK.nii.gz REFERENCE.nii.gz|"" NAME SECONDS
"""
import sys
import nibabel as nib
import numpy as np
mask_path, reference_path, name, seconds = sys.argv[1:]
image = nib.load(mask_path)
mask = np.asarray(image.dataobj) > 0.5
voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
row = [name, f"{mask.sum() * voxel_ml:.0f}", "", "", f"{float(seconds):.1f}"]
if reference_path:
    reference = np.asarray(nib.load(reference_path).dataobj) > 0.5
    if reference.shape != mask.shape:
        sys.exit(f"{reference_path}: reference mask shape {reference.shape} differs from the image's {mask.shape}")
    row[2] = f"{reference.sum() * voxel_ml:.0f}"
    row[3] = f"{2.0 * (mask & reference).sum() / (mask.sum() + reference.sum()):.3f}"
print("\t".join(row))
