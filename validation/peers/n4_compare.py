#!/usr/bin/env python3
"""Bias-field correction, brain masks and intensity normalization: pedinorm against ANTsPy N4.

Ground truth: the MNI ICBM152 2009 T1 (skull-stripped) and its GM/WM probability maps, with
synthetic smooth multiplicative bias fields (20-40 % max/min), Rician noise and child-like
contrast changes made from the tissue maps (reduced and inverted grey/white contrast).

Measures, inside the true brain (t1 > 0):
  * correlation of the recovered log field with the true log field;
  * coefficient of variation of white matter (wm > 0.9) before and after correction;
  * time of pedinorm (`pedinorm preprocess --steps bias`, whole CLI run including NIfTI I/O)
    and of ANTsPy `n4_bias_field_correction` (in-process call) on the same image and mask;
  * Dice of pedinorm's template-free brain mask against t1 > 0;
  * agreement of the same brain acquired twice (different bias, gain, gamma and noise) after
    full preprocessing with each normalization method.

Usage:
  .data/venv/bin/python validation/peers/n4_compare.py --pedinorm target/release/pedinorm \
      --data .data/mni --work /tmp/n4cmp [--resolutions 2,1] [--threads 2]

Prints markdown tables; installs antspyx into the running interpreter when it is missing.
"""

import argparse
import os
import subprocess
import sys
import time

import nibabel as nib
import numpy as np


def ensure_ants():
    try:
        import ants  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "antspyx==0.6.3"])
    import ants

    return ants


def downsample(volume, affine, factor):
    """Block mean by an integer factor (the brain's physical extent is kept)."""
    if factor == 1:
        return volume.astype(np.float32), affine
    shape = [s // factor * factor for s in volume.shape]
    v = volume[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    v = v.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor, factor).mean(axis=(1, 3, 5))
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * factor
    new[:3, 3] = affine[:3, :3] @ np.full(3, (factor - 1) / 2.0) + affine[:3, 3]
    return v.astype(np.float32), new


def smooth_field(shape, affine, amplitude, seed, brain):
    """exp(ln(1 + amplitude) * g), g a sum of long-wavelength cosines scaled to [-0.5, 0.5] in
    the brain, so the field's max/min ratio inside the brain is 1 + amplitude."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    world = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape((3,) + tuple(shape))
    g = np.zeros(shape)
    for _ in range(4):
        wavelength = rng.uniform(120.0, 260.0)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        g += rng.uniform(0.5, 1.0) * np.cos(2 * np.pi * np.tensordot(direction, world, axes=1) / wavelength + phase)
    lo, hi = g[brain].min(), g[brain].max()
    g = (g - lo) / (hi - lo) - 0.5
    return np.exp(np.log1p(amplitude) * g)


def contrast(t1, gm, wm, kind):
    """Child-like contrasts from the tissue maps: `adult` (as is), `child` (half the grey/white
    difference), `infant` (white matter darker than grey matter)."""
    brain = t1 > 0
    m_gm = np.median(t1[(gm > 0.8) & brain])
    m_wm = np.median(t1[(wm > 0.8) & brain])
    if kind == "adult":
        return t1.copy()
    if kind == "child":
        target_gm, target_wm = m_gm, m_gm + 0.5 * (m_wm - m_gm)
    elif kind == "infant":
        target_gm, target_wm = m_gm, 0.75 * m_gm
    else:
        raise ValueError(kind)
    out = t1 + gm * (target_gm - m_gm) + wm * (target_wm - m_wm)
    return np.where(brain, np.maximum(out, 1.0), 0.0).astype(np.float32)


def rician(clean, sigma, seed):
    rng = np.random.default_rng(seed)
    a = clean + rng.normal(0, sigma, clean.shape)
    b = rng.normal(0, sigma, clean.shape)
    return np.sqrt(a * a + b * b).astype(np.float32)


def save(path, data, affine, dtype=np.float32):
    nib.save(nib.Nifti1Image(data.astype(dtype), affine), path)


def log_corr(recovered, truth, mask):
    a = np.log(recovered[mask].astype(np.float64))
    b = np.log(truth[mask].astype(np.float64))
    return float(np.corrcoef(a, b)[0, 1])


def cv(image, region):
    v = image[region].astype(np.float64)
    return float(v.std() / v.mean())


def dice(a, b):
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def run_pedinorm(binary, args, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([binary, "preprocess"] + args, check=True, env=env)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", default="target/release/pedinorm")
    parser.add_argument("--data", default=".data/mni")
    parser.add_argument("--work", default="/tmp/pedinorm-n4")
    parser.add_argument("--resolutions", default="2,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-ants", action="store_true")
    parser.add_argument("--bias-iterations", default="50x50x50x50",
                        help="iterations per fitting level, given to both tools (one number per level)")
    parser.add_argument("--bias-only", action="store_true", help="skip the mask and normalization experiments")
    options = parser.parse_args()
    os.makedirs(options.work, exist_ok=True)
    ants = None if options.skip_ants else ensure_ants()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(options.threads)

    t1_img = nib.load(os.path.join(options.data, "t1.nii.gz"))
    t1_full = t1_img.get_fdata(dtype=np.float32)
    gm_full = nib.load(os.path.join(options.data, "gm.nii.gz")).get_fdata(dtype=np.float32)
    wm_full = nib.load(os.path.join(options.data, "wm.nii.gz")).get_fdata(dtype=np.float32)
    # The probability maps are stored as uint8 0..255.
    for tissue in (gm_full, wm_full):
        if tissue.max() > 1.5:
            tissue /= 255.0

    bias_rows, mask_rows, norm_rows = [], [], []
    for res in [int(r) for r in options.resolutions.split(",")]:
        t1, affine = downsample(t1_full, t1_img.affine, res)
        gm, _ = downsample(gm_full, t1_img.affine, res)
        wm, _ = downsample(wm_full, t1_img.affine, res)
        brain = t1 > 0
        white = (wm > 0.9) & brain
        m_wm = float(np.median(t1[white]))
        mask_path = os.path.join(options.work, f"truth_mask_{res}mm.nii.gz")
        save(mask_path, brain, affine, np.uint8)
        cases = [("adult", 0.4), ("infant", 0.4)] if res == 1 else [(c, a) for c in ("adult", "child", "infant") for a in (0.2, 0.4)]
        for seed, (kind, amplitude) in enumerate(cases, start=1):
            clean = contrast(t1, gm, wm, kind)
            field = smooth_field(t1.shape, affine, amplitude, seed, brain)
            noisy = rician(clean * field, 0.03 * m_wm, 100 + seed)
            noisy = np.where(brain, noisy, rician(np.zeros_like(clean), 0.03 * m_wm, 200 + seed))
            reference = rician(clean, 0.03 * m_wm, 100 + seed)  # same noise, no bias: the floor
            name = f"{kind}_{int(amplitude * 100)}_{res}mm"
            in_path = os.path.join(options.work, f"{name}.nii.gz")
            save(in_path, noisy, affine)
            out_path = os.path.join(options.work, f"{name}_pedinorm.nii.gz")
            field_path = os.path.join(options.work, f"{name}_pedinorm_field.nii.gz")
            seconds = run_pedinorm(
                options.pedinorm,
                [in_path, "--output", out_path, "--field-output", field_path, "--mask", mask_path, "--steps", "bias",
                 "--bias-iterations", options.bias_iterations],
                options.threads,
            )
            ours = nib.load(out_path).get_fdata(dtype=np.float32)
            ours_field = nib.load(field_path).get_fdata(dtype=np.float32)
            row = {
                "case": name,
                "cv_clean": cv(reference, white),
                "cv_before": cv(noisy, white),
                "ours_time": seconds,
                "ours_corr": log_corr(ours_field, field, brain),
                "ours_cv": cv(ours, white),
            }
            if ants is not None:
                image = ants.from_numpy(noisy, spacing=(float(res),) * 3)
                mask = ants.from_numpy(brain.astype(np.float32), spacing=(float(res),) * 3)
                start = time.perf_counter()
                ants_field = ants.n4_bias_field_correction(
                    image, mask=mask, return_bias_field=True,
                    convergence={"iters": [int(i) for i in options.bias_iterations.split("x")], "tol": 1e-7}).numpy()
                row["ants_time"] = time.perf_counter() - start
                row["ants_corr"] = log_corr(ants_field, field, brain)
                row["ants_cv"] = cv(noisy / ants_field, white)
            bias_rows.append(row)
            print(row, flush=True)

            if options.bias_only:
                continue
            # Template-free mask on the biased, noisy image (background noise included).
            mask_out = os.path.join(options.work, f"{name}_mask.nii.gz")
            full_out = os.path.join(options.work, f"{name}_full.nii.gz")
            seconds = run_pedinorm(
                options.pedinorm, [in_path, "--output", full_out, "--mask-output", mask_out], options.threads
            )
            ours_mask = nib.load(mask_out).get_fdata() > 0.5
            mask_rows.append({"case": name, "dice": dice(ours_mask, brain), "full_time": seconds})
            print(mask_rows[-1], flush=True)

        # Normalization: the same brain acquired twice (different bias, gain, gamma, noise).
        for kind in ([] if options.bias_only else ["adult", "infant"]):
            clean = contrast(t1, gm, wm, kind)
            template_path = os.path.join(options.work, f"template_{kind}_{res}mm.nii.gz")
            save(template_path, clean, affine)
            paths = []
            for scan, (gain, gamma, amplitude) in enumerate([(1.0, 1.0, 0.3), (1.7, 1.15, 0.4)]):
                scanned = gain * np.power(clean / m_wm, gamma) * m_wm
                field = smooth_field(t1.shape, affine, amplitude, 50 + scan, brain)
                noisy = np.where(brain, rician(scanned * field, 0.03 * m_wm, 300 + scan), rician(np.zeros_like(clean), 0.03 * m_wm, 400 + scan))
                path = os.path.join(options.work, f"pair_{kind}_{scan}_{res}mm.nii.gz")
                save(path, noisy, affine)
                paths.append(path)
            for method in ("wm-peak", "tissue-peaks", "nyul", "histogram-match"):
                outputs = []
                for scan, path in enumerate(paths):
                    out = os.path.join(options.work, f"pair_{kind}_{scan}_{res}mm_{method}.nii.gz")
                    args = [path, "--output", out, "--normalization", method, "--mask", mask_path]
                    if method != "wm-peak":
                        args += ["--template", template_path, "--template-mask", mask_path]
                    run_pedinorm(options.pedinorm, args, options.threads)
                    outputs.append(nib.load(out).get_fdata(dtype=np.float32))
                a, b = outputs[0][brain], outputs[1][brain]
                raw_a = nib.load(paths[0]).get_fdata(dtype=np.float32)[brain]
                raw_b = nib.load(paths[1]).get_fdata(dtype=np.float32)[brain]
                norm_rows.append({
                    "case": f"{kind}_{res}mm",
                    "method": method,
                    "raw_rel_mad": float(np.mean(np.abs(raw_a - raw_b)) / np.mean(np.abs(raw_a))),
                    "rel_mad": float(np.mean(np.abs(a - b)) / np.mean(np.abs(a))),
                    "wm_ratio": float(np.median(outputs[1][white]) / np.median(outputs[0][white])),
                    "corr": float(np.corrcoef(a, b)[0, 1]),
                })
                print(norm_rows[-1], flush=True)

    print("\n| case | WM CV clean | WM CV biased | pedinorm WM CV | ANTs WM CV | pedinorm log-field r | ANTs log-field r | pedinorm s | ANTs s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in bias_rows:
        print(f"| {r['case']} | {r['cv_clean']:.4f} | {r['cv_before']:.4f} | {r['ours_cv']:.4f} | {r.get('ants_cv', float('nan')):.4f} | "
              f"{r['ours_corr']:.4f} | {r.get('ants_corr', float('nan')):.4f} | {r['ours_time']:.1f} | {r.get('ants_time', float('nan')):.1f} |")
    print("\n| case | mask Dice vs t1 > 0 | full preprocess s |")
    print("|---|---|---|")
    for r in mask_rows:
        print(f"| {r['case']} | {r['dice']:.4f} | {r['full_time']:.1f} |")
    print("\n| brain | method | raw rel. MAD | normalized rel. MAD | WM median ratio | r |")
    print("|---|---|---|---|---|---|")
    for r in norm_rows:
        print(f"| {r['case']} | {r['method']} | {r['raw_rel_mad']:.4f} | {r['rel_mad']:.4f} | {r['wm_ratio']:.4f} | {r['corr']:.4f} |")


if __name__ == "__main__":
    main()
