#!/usr/bin/env python3
"""ANTs round trip of pedinorm's transform files, both ways.

1. pedinorm -> ANTs: `pedinorm register --transform syn` writes PREFIXaffine.txt and
   PREFIXwarp.nii.gz; ants.apply_transforms with [warp, affine] must reproduce pedinorm's own
   PREFIXwarped.nii.gz (correlation inside the fixed brain), and the inverse pair
   [[affine,1], inverse_warp] must agree with `pedinorm apply` of the same chain.
2. ANTs -> pedinorm: ants.registration (SyN) writes a warp and a .mat affine; `pedinorm apply`
   with ANTs' forward list must reproduce ants.apply_transforms.

Prints one JSON object with the correlations. Usage:
  registration_ants_roundtrip.py PEDINORM_BINARY FIXED MOVING WORKDIR
"""
import json
import subprocess
import sys
from pathlib import Path

import ants
import numpy as np


def correlation(a, b, mask):
    x, y = a[mask], b[mask]
    return float(np.corrcoef(x, y)[0, 1])


def main():
    pedinorm, fixed_path, moving_path, work = sys.argv[1:5]
    work = Path(work)
    fixed = ants.image_read(fixed_path)
    moving = ants.image_read(moving_path)
    mask = fixed.numpy() > 0.05 * fixed.numpy().max()
    moving_mask = moving.numpy() > 0.05 * moving.numpy().max()
    prefix = str(work / "ped_")
    subprocess.run([pedinorm, "register", "--fixed", fixed_path, "--moving", moving_path, "--transform", "syn",
                    "--output", prefix], check=True)
    ants_warped = ants.apply_transforms(fixed, moving, [prefix + "warp.nii.gz", prefix + "affine.txt"])
    ours = ants.image_read(prefix + "warped.nii.gz")
    result = {"pedinorm_to_ants_forward": correlation(ants_warped.numpy(), ours.numpy(), mask)}
    # Inverse chain: the fixed image into the moving space.
    inverse_out = str(work / "ped_inverse_applied.nii.gz")
    subprocess.run([pedinorm, "apply", "-r", moving_path, "-i", fixed_path, "-t", f"[{prefix}affine.txt,1]",
                    "-t", prefix + "inverse_warp.nii.gz", "-o", inverse_out], check=True)
    # ANTsPy only inverts files named .mat: invert the affine with ANTs itself instead.
    inverse_affine = ants.read_transform(prefix + "affine.txt").invert()
    ants.write_transform(inverse_affine, str(work / "ants_inverted_affine.txt"))
    ants_inverse = ants.apply_transforms(moving, fixed, [str(work / "ants_inverted_affine.txt"),
                                                         prefix + "inverse_warp.nii.gz"])
    result["pedinorm_to_ants_inverse"] = correlation(ants_inverse.numpy(), ants.image_read(inverse_out).numpy(),
                                                     moving_mask)
    # ANTs-written transforms applied by pedinorm.
    registration = ants.registration(fixed, moving, type_of_transform="SyN", outprefix=str(work / "ants_"),
                                     random_seed=1)
    forward = registration["fwdtransforms"]
    ants_result = ants.apply_transforms(fixed, moving, forward)
    applied = str(work / "ants_applied_by_pedinorm.nii.gz")
    command = [pedinorm, "apply", "-r", fixed_path, "-i", moving_path, "-o", applied]
    for t in forward:
        command += ["-t", t]
    subprocess.run(command, check=True)
    result["ants_to_pedinorm_forward"] = correlation(ants_result.numpy(), ants.image_read(applied).numpy(), mask)
    result["ants_transforms"] = [Path(t).name for t in forward]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
