#!/usr/bin/env python3
"""Tissue segmentation: pedinorm against ANTsPy Atropos on synthetic subjects with truth labels.

Data: `pedinorm synth` subjects (self-generated: the MNI ICBM152 2009 base under growth,
individual anatomy, site contrast, bias and noise), ages 0-17 including the first year
(inverted and isointense T1 contrast). Truth: the generator's tissue labels (1 CSF, 2 GM, 3 WM).

Priors, the same for both tools: the base's GM and WM probability maps (and CSF = mask - GM -
WM) brought onto each subject by `pedinorm register --transform affine --metric mi` of the base
T1 and `pedinorm apply`: what a template's tissue priors look like after affine alignment (the
individual folding, thickness and ventricle variation is not in them).

Runs, each on the same image and brain mask:
  * pedinorm segment with the priors (weight 0.5, MRF 0.3), and with k-means (no priors);
  * ants.atropos with the same priors (`i=[csf, gm, wm]`, priorweight 0.5, m='[0.3,1x1x1]'),
    and with `i='Kmeans[3]'`.
Without priors class names come from intensity order, which inverts in infants: the k-means
rows are scored with the best assignment of classes to tissues (both tools alike).

Measures: Dice of CSF, GM and WM against the truth per subject, and wall time (pedinorm: the
whole CLI run with NIfTI I/O; Atropos: the in-process call).

Usage:
  .data/venv/bin/python validation/peers/segmentation_compare.py --pedinorm target/release/pedinorm \
      --work /tmp/segcmp [--n-infants 3 --n-children 5 --resolution 2 --seed 11]
"""

import argparse
import itertools
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

TISSUES = ["csf", "gm", "wm"]


def run(*args):
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def dice(a, b):
    total = a.sum() + b.sum()
    return 2.0 * (a & b).sum() / total if total else float("nan")


def scores(truth, labels, best_assignment):
    """Dice per tissue; with best_assignment, the class-to-tissue map that maximises the mean."""
    assignments = itertools.permutations([1, 2, 3]) if best_assignment else [(1, 2, 3)]
    best = None
    for classes in assignments:
        values = [dice(truth == t + 1, labels == c) for t, c in enumerate(classes)]
        if best is None or np.mean(values) > np.mean(best):
            best = values
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--data", default=".data/mni")
    parser.add_argument("--n-infants", type=int, default=3)
    parser.add_argument("--n-children", type=int, default=5)
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    import ants

    pedinorm = os.path.abspath(args.pedinorm)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    cohorts = [("infants", "0.2-1", args.n_infants), ("children", "1-17", args.n_children)]
    subjects = []
    for name, ages, n in cohorts:
        folder = os.path.join(work, name)
        if not os.path.isfile(os.path.join(folder, "cohort.csv")):
            run(pedinorm, "synth", "--n", n, "--ages", ages, "--seed", args.seed, "--resolution",
                args.resolution, "--sites", 3, "--no-warps", "--out-dir", folder)
        with open(os.path.join(folder, "cohort.csv")) as index:
            header = index.readline().strip().split(",")
            for line in index:
                row = dict(zip(header, line.strip().split(",")))
                subjects.append((folder, row))

    rows = []
    for folder, row in subjects:
        sid = f"{os.path.basename(folder)}-{row['id']}"
        image = os.path.join(folder, row["path"])
        mask = os.path.join(folder, row["mask"])
        truth = np.asarray(nib.load(os.path.join(folder, row["labels"])).dataobj).astype(int)
        out = os.path.join(work, "runs", sid)
        os.makedirs(out, exist_ok=True)
        # Priors: the base's tissue maps after affine registration of the base T1.
        run(pedinorm, "register", "--fixed", image, "--moving", os.path.join(folder, "base_t1.nii.gz"),
            "--transform", "affine", "--metric", "mi", "--output", os.path.join(out, "base_"))
        affine = os.path.join(out, "base_affine.txt")
        for tissue in ["gm", "wm"]:
            run(pedinorm, "apply", "-r", image, "-i", os.path.join(args.data, f"{tissue}.nii.gz"),
                "-t", affine, "-o", os.path.join(out, f"prior_{tissue}.nii.gz"))
        mask_img = nib.load(mask)
        inside = np.asarray(mask_img.dataobj) > 0.5
        # The base's maps may be stored as 0-255: bring them to probabilities first.
        maps = {}
        for tissue in ["gm", "wm"]:
            path = os.path.join(out, f"prior_{tissue}.nii.gz")
            values = np.asarray(nib.load(path).dataobj).astype(np.float32)
            maps[tissue] = np.clip(values / max(float(values.max()), 1.0), 0.0, 1.0) * inside
            nib.save(nib.Nifti1Image(maps[tissue], mask_img.affine), path)
        csf = np.clip(inside.astype(np.float32) - maps["gm"] - maps["wm"], 0.0, 1.0)
        nib.save(nib.Nifti1Image(csf.astype(np.float32), mask_img.affine), os.path.join(out, "prior_csf.nii.gz"))
        priors = [os.path.join(out, f"prior_{t}.nii.gz") for t in TISSUES]

        results = {}
        for variant, extra in [("priors", ["--priors", ",".join(priors), "--tissues", "csf,gm,wm"]),
                               ("kmeans", ["--tissues", "class1,class2,class3"])]:
            target = os.path.join(out, f"pedinorm-{variant}")
            subprocess.run(["rm", "-rf", target], check=True)
            start = time.perf_counter()
            run(pedinorm, "segment", "--image", image, "--mask", mask, *extra, "--out-dir", target)
            seconds = time.perf_counter() - start
            labels = np.asarray(nib.load(os.path.join(target, "labels.nii.gz")).dataobj).astype(int)
            results[f"pedinorm {variant}"] = (scores(truth, labels, variant == "kmeans"), seconds)

        a = ants.image_read(image)
        x = ants.image_read(mask)
        x = ants.threshold_image(x, 0.5, 1e9)
        for variant in ["priors", "kmeans"]:
            start = time.perf_counter()
            if variant == "priors":
                prior_images = [ants.image_read(p) for p in priors]
                seg = ants.atropos(a=a, x=x, i=prior_images, m="[0.3,1x1x1]", c="[20,0.0001]", priorweight=0.5)
            else:
                seg = ants.atropos(a=a, x=x, i="Kmeans[3]", m="[0.3,1x1x1]", c="[20,0.0001]")
            seconds = time.perf_counter() - start
            labels = seg["segmentation"].numpy().astype(int)
            results[f"Atropos {variant}"] = (scores(truth, labels, variant == "kmeans"), seconds)
        for method, (values, seconds) in results.items():
            rows.append((sid, float(row["age_years"]), row.get("site", ""), method, values, seconds))
            print(f"{sid} age {float(row['age_years']):.2f} {method}: "
                  f"CSF {values[0]:.3f} GM {values[1]:.3f} WM {values[2]:.3f} ({seconds:.1f} s)", file=sys.stderr)

    print("| subject | age (y) | site | method | Dice CSF | Dice GM | Dice WM | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for sid, age, site, method, values, seconds in rows:
        print(f"| {sid} | {age:.2f} | {site} | {method} | {values[0]:.3f} | {values[1]:.3f} | {values[2]:.3f} | {seconds:.1f} |")
    print()
    print("| group | method | mean Dice CSF | mean Dice GM | mean Dice WM | mean time (s) |")
    print("|---|---|---|---|---|---|")
    methods = sorted({r[3] for r in rows})
    for group, test in [("age < 1", lambda age: age < 1.0), ("age ≥ 1", lambda age: age >= 1.0)]:
        for method in methods:
            chosen = [r for r in rows if r[3] == method and test(r[1])]
            if chosen:
                mean = np.mean([r[4] for r in chosen], axis=0)
                time_mean = np.mean([r[5] for r in chosen])
                print(f"| {group} | {method} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {time_mean:.1f} |")


if __name__ == "__main__":
    main()
