#!/usr/bin/env python3
"""Focal lesions put into real brains, then looked for with `pedinorm deviation`.

The lesions are made here with numpy, not by pedinorm's synthetic generator: a sphere of the
given radius with a 1 mm soft edge, centred on a random white-matter voxel (bright on T1w, at
least radius + 6 mm from the brain's edge), whose intensity is multiplied by 1 + contrast. The
brain is a real, brain-extracted T1w image the database has not seen. Each lesion is scored in
the case's own space: voxel AUC of |z| (lesion against the rest of the brain), whether a
significant cluster touches the lesion, the peak |z| inside it, and the share of the brain
outside the lesion beyond the calibrated threshold.

    real_lesions.py --pedinorm target/release/pedinorm --normdb normdb.h5 --work work/lesions \
        --image brain.nii.gz --age 17 [--site S] --lesion 4:0.3 --lesion 8:-0.3 --seed 1

Prints one Markdown row per lesion and writes WORK/lesions.json.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.stats import rankdata


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney AUC of positive against negative scores (ties count half)."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos = len(positive)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * len(negative)))


def make_lesion(image: nib.Nifti1Image, radius_mm: float, contrast: float, rng: np.random.Generator):
    data = image.get_fdata(dtype=np.float32)
    spacing = np.array(image.header.get_zooms()[:3], dtype=float)
    brain = data > 0
    depth_mm = ndimage.distance_transform_edt(brain, sampling=spacing)
    bright = data > np.percentile(data[brain], 70)  # T1w white matter
    candidates = np.argwhere(bright & (depth_mm > radius_mm + 6.0))
    if len(candidates) == 0:
        raise SystemExit(f"no white-matter voxel {radius_mm + 6} mm inside the brain for a {radius_mm} mm lesion")
    centre = candidates[rng.integers(len(candidates))]
    grid = np.indices(data.shape, dtype=np.float32)
    distance = np.sqrt(sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3)))
    profile = 1.0 / (1.0 + np.exp(np.clip((distance - radius_mm) / 0.25, -50.0, 50.0)))  # ~1 mm edge
    profile[~brain] = 0.0
    lesioned = data * (1.0 + contrast * profile)
    truth = profile > 0.5
    return lesioned.astype(np.float32), truth, centre


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", required=True)
    parser.add_argument("--normdb", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--image", required=True, type=Path, help="a brain-extracted real T1w image")
    parser.add_argument("--age", required=True)
    parser.add_argument("--site")
    parser.add_argument("--lesion", action="append", required=True, metavar="RADIUS_MM:CONTRAST")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    image = nib.load(args.image)
    voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, spec in enumerate(args.lesion):
        radius_mm, contrast = (float(v) for v in spec.split(":"))
        lesioned, truth, centre = make_lesion(image, radius_mm, contrast, rng)
        name = f"{args.image.name.split('.')[0]}_r{radius_mm:g}_c{contrast:+g}_{k}"
        case = args.work / f"{name}.nii.gz"
        header = image.header.copy()
        header.set_data_dtype(np.float32)  # keep the lesion's exact intensities
        nib.save(nib.Nifti1Image(lesioned, image.affine, header), case)
        out_dir = args.work / name
        command = [args.pedinorm, "deviation", "--normdb", args.normdb, "--case", str(case), "--age", args.age,
                   "--out-dir", str(out_dir)]
        if args.site:
            command += ["--site", args.site]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{name}: pedinorm deviation failed: {run.stderr.strip()}", file=sys.stderr)
            return 1
        report = json.loads((out_dir / "report.json").read_text())
        z = nib.load(out_dir / "intensity_z_native.nii.gz").get_fdata()
        clusters = nib.load(out_dir / "clusters_native.nii.gz").get_fdata()
        limit = report["thresholds"][0]["z_threshold"]
        brain = (image.get_fdata() > 0) & (z != 0)
        inside, outside = np.abs(z[brain & truth]), np.abs(z[brain & ~truth])
        # clusters_native labels the significant clusters only (docs/deviation.md).
        touched = bool(np.any(clusters[truth] > 0))
        rows.append({
            "case": name,
            "radius_mm": radius_mm,
            "contrast": contrast,
            "volume_ml": float(truth.sum() * voxel_ml),
            "centre_voxel": [int(c) for c in centre],
            "auc": auc(inside, outside),
            "peak_abs_z": float(inside.max()) if inside.size else 0.0,
            "detected": touched,
            "false_beyond_threshold": float(np.mean(outside > limit)),
            "reliable": report["reliability"]["reliable"],
        })
    print("| lesion | volume ml | voxel AUC | peak \\|z\\| inside | significant cluster on it | brain outside it beyond threshold | flagged unreliable |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| r {r['radius_mm']:g} mm, {r['contrast']:+.0%} | {r['volume_ml']:.2f} | {r['auc']:.3f} | {r['peak_abs_z']:.1f} "
              f"| {'yes' if r['detected'] else 'no'} | {100 * r['false_beyond_threshold']:.2f} % | {'no' if r['reliable'] else 'yes'} |")
    (args.work / "lesions.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
