#!/usr/bin/env python3
"""Registration validation: synthetic pairs with known ground truth, pedinorm vs peers.

Pairs are made from the MNI ICBM152 2009 T1 (skull-stripped) and its GM/WM maps: the moving
image is the template pulled through a known map H (moving space -> template space):
H(q) = a(q) + w(a(q)), with `a` a child-like affine (scales 0.7-0.95: the child head is
smaller), rotation up to 10 degrees, shift up to 6 mm, and `w` a smooth random displacement
field (max 5 mm), then a smooth multiplicative bias field and Gaussian noise.

A registration returns R: fixed (template) -> moving. Metrics, inside the template brain:
endpoint error |H(R(p)) - p| (mean, 95th percentile), Dice of GM/WM labels (template labels
thresholded at 0.5, carried to the moving space by H, brought back by R with nearest
neighbour), count of non-positive Jacobian determinants of the deformable field, wall time and
peak memory (/usr/bin/time -v) of the registration process.

elastix (`--methods elastix`) is Debian's elastix 5 (`sudo apt-get install -y elastix`; `run`
stops at once if `elastix` or `transformix` is not on PATH): an affine stage then a B-spline
stage (final grid spacing 10 mm), both with Mattes mutual information (32 bins) over 4
smoothing-pyramid levels, adaptive stochastic gradient descent, 500 iterations per level on 4096
random samples, in the manner of the elastix model zoo's brain MR files (Par0000).
`transformix -def all` turns the composed result into a dense fixed -> moving displacement
field in LPS mm, which is what an ANTs warp is, so the same evaluation applies.

Every method's transforms are applied with ANTs (ants.apply_transforms and
ants.apply_transforms_to_points), so pedinorm's files are also checked to mean in ANTs what
they mean in pedinorm.

Usage:
  registration_pairs.py make --resolution 2 --count 3 --out DIR
  registration_pairs.py run --pairs DIR --methods pedinorm,ants-syn,ants-synquick,greedy,elastix \
      --pedinorm target/release/pedinorm --threads 2 --results results.json
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def ensure_peers():
    """Installs the peer tools into this interpreter's environment when missing."""
    missing = []
    try:
        import ants  # noqa: F401
    except ImportError:
        missing.append("antspyx")
    try:
        import picsl_greedy  # noqa: F401
    except ImportError:
        missing.append("picsl-greedy")
    if missing:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])


def load_mni(resolution):
    import ants
    t1 = ants.image_read(str(ROOT / ".data/mni/t1.nii.gz"))
    gm = ants.image_read(str(ROOT / ".data/mni/gm.nii.gz"))
    wm = ants.image_read(str(ROOT / ".data/mni/wm.nii.gz"))
    if resolution != 1:
        spacing = (float(resolution),) * 3
        t1 = ants.resample_image(t1, spacing, use_voxels=False, interp_type=0)
        gm = ants.resample_image(gm, spacing, use_voxels=False, interp_type=0)
        wm = ants.resample_image(wm, spacing, use_voxels=False, interp_type=0)
    return t1, gm, wm


def ras_affine(image):
    """Voxel -> RAS world 4x4 of an ANTs image (ANTs works in LPS)."""
    direction = np.array(image.direction)
    spacing = np.array(image.spacing)
    origin = np.array(image.origin)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = origin
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps


def voxel_points(affine, shape):
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def sample(volume, affine, points, order=1):
    from scipy.ndimage import map_coordinates
    inverse = np.linalg.inv(affine)
    vox = points @ inverse[:3, :3].T + inverse[:3, 3]
    return map_coordinates(volume, vox.T, order=order, mode="nearest")


def truth_map(truth, points):
    """H: moving-space RAS points -> template RAS points."""
    a = truth["affine"]
    q = points @ a[:3, :3].T + a[:3, 3]
    w = np.stack([sample(truth["field"][..., c], truth["grid"], q) for c in range(3)], axis=1)
    return q + w


def make(args):
    import ants
    from scipy.ndimage import gaussian_filter
    ensure_peers()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t1, gm, wm = load_mni(args.resolution)
    grid = ras_affine(t1)
    fixed = t1.numpy().astype(np.float32)
    ants.image_write(t1, str(out / "fixed.nii.gz"))
    labels = np.zeros(fixed.shape, np.float32)
    labels[gm.numpy() >= 0.5] = 1
    labels[wm.numpy() >= 0.5] = 2
    ants.image_write(t1.new_image_like(labels), str(out / "fixed_labels.nii.gz"))
    brain = (fixed > 0.1 * fixed.max()).astype(np.float32)
    ants.image_write(t1.new_image_like(brain), str(out / "fixed_brain.nii.gz"))
    rng = np.random.default_rng(args.seed)
    points = voxel_points(grid, fixed.shape)
    centre = (points * brain.reshape(-1, 1)).sum(0) / brain.sum()
    spacing = float(args.resolution)
    for k in range(args.count):
        scale = rng.uniform(0.7, 0.95)
        scales = scale * rng.uniform(0.97, 1.03, 3)
        angles = np.deg2rad(rng.uniform(-10, 10, 3))
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        linear = rz @ ry @ rx @ np.diag(1.0 / scales)
        shift = rng.uniform(-6, 6, 3)
        a = np.eye(4)
        a[:3, :3] = linear
        # The moving brain is centred near the template centre (plus the shift).
        a[:3, 3] = centre - linear @ centre + shift
        sigma = 10.0 / spacing
        field = np.stack([gaussian_filter(rng.standard_normal(fixed.shape), sigma) for _ in range(3)], axis=-1)
        field *= 5.0 / np.linalg.norm(field, axis=-1).max()
        truth = {"affine": a, "field": field.astype(np.float32), "grid": grid}
        source = truth_map(truth, points)
        moving = sample(fixed, grid, source).reshape(fixed.shape)
        moving_labels = sample(labels, grid, source, order=0).reshape(fixed.shape)
        bias = gaussian_filter(rng.standard_normal(fixed.shape), 30.0 / spacing)
        bias = np.exp(0.25 * bias / np.abs(bias).max())
        moving = moving * bias + rng.normal(0, 0.02 * fixed.max(), fixed.shape) * (moving > 0)
        moving = np.clip(moving, 0, None).astype(np.float32)
        pair = out / f"pair{k}"
        pair.mkdir(exist_ok=True)
        ants.image_write(t1.new_image_like(moving), str(pair / "moving.nii.gz"))
        ants.image_write(t1.new_image_like(moving_labels.astype(np.float32)), str(pair / "moving_labels.nii.gz"))
        np.savez_compressed(pair / "truth.npz", **truth, scale=scales)
        print(f"pair{k}: scales {np.round(scales, 3)}, angles {np.round(np.rad2deg(angles), 1)}, shift {np.round(shift, 1)}")


def timed(command, env=None):
    """Runs a command under /usr/bin/time -v: (seconds, peak MB)."""
    started = time.time()
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    elapsed = time.time() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    peak = 0.0
    for line in result.stderr.splitlines():
        if "Maximum resident set size" in line:
            peak = int(line.split(":")[1]) / 1024.0
    return elapsed, peak


ANTS_SCRIPT = """
import ants, sys, json
fixed = ants.image_read(sys.argv[1]); moving = ants.image_read(sys.argv[2])
kind = sys.argv[3]; prefix = sys.argv[4]
result = ants.registration(fixed, moving, type_of_transform=kind, outprefix=prefix, random_seed=1)
json.dump({"forward": result["fwdtransforms"], "inverse": result["invtransforms"]}, open(prefix + "transforms.json", "w"))
"""

GREEDY_SCRIPT = """
import sys
from picsl_greedy import Greedy3D
fixed, moving, prefix, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
g = Greedy3D()
g.execute(f"-d 3 -threads {threads} -a -dof 12 -m NMI -ia-image-centers -n 100x50x10 -i {fixed} {moving} -o {prefix}affine.mat")
g.execute(f"-d 3 -threads {threads} -m NCC 2x2x2 -n 100x50x10 -s 1.732vox 0.707vox -it {prefix}affine.mat "
          f"-i {fixed} {moving} -o {prefix}warp.nii.gz -oinv {prefix}inverse_warp.nii.gz")
"""


def greedy_affine_to_itk(path_mat, path_txt):
    """greedy writes a 4x4 RAS matrix (fixed -> moving); convert to an ITK text affine."""
    m = np.loadtxt(path_mat)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ m @ flip
    params = list(lps[:3, :3].reshape(-1)) + list(lps[:3, 3])
    Path(path_txt).write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                              f"Parameters: {' '.join(repr(float(v)) for v in params)}\nFixedParameters: 0 0 0\n")


ELASTIX_COMMON = """(FixedInternalImagePixelType "float")
(MovingInternalImagePixelType "float")
(FixedImageDimension 3)
(MovingImageDimension 3)
(UseDirectionCosines "true")
(Registration "MultiResolutionRegistration")
(Interpolator "BSplineInterpolator")
(ResampleInterpolator "FinalBSplineInterpolator")
(Resampler "DefaultResampler")
(FixedImagePyramid "FixedSmoothingImagePyramid")
(MovingImagePyramid "MovingSmoothingImagePyramid")
(Optimizer "AdaptiveStochasticGradientDescent")
(Metric "AdvancedMattesMutualInformation")
(NumberOfHistogramBins 32)
(NumberOfResolutions 4)
(MaximumNumberOfIterations 500)
(ImageSampler "RandomCoordinate")
(NumberOfSpatialSamples 4096)
(NewSamplesEveryIteration "true")
(CheckNumberOfSamples "true")
(HowToCombineTransforms "Compose")
(DefaultPixelValue 0)
(WriteResultImage "false")
(ResultImageFormat "nii.gz")
"""

ELASTIX_AFFINE = ELASTIX_COMMON + """(Transform "AffineTransform")
(AutomaticTransformInitialization "true")
(AutomaticTransformInitializationMethod "CenterOfGravity")
(AutomaticScalesEstimation "true")
"""

ELASTIX_BSPLINE = ELASTIX_COMMON + """(Transform "BSplineTransform")
(FinalGridSpacingInPhysicalUnits 10.0)
(GridSpacingSchedule 8.0 4.0 2.0 1.0)
"""


def require_elastix():
    """Stops with a message naming the missing tool and how to install it."""
    import shutil
    for tool in ("elastix", "transformix"):
        if shutil.which(tool) is None:
            sys.exit(f"registration_pairs.py: `{tool}` not found on PATH; install elastix 5 "
                     "(Debian/Ubuntu: sudo apt-get install -y elastix) or leave `elastix` out of --methods")


def run_elastix(fixed, moving, prefix, threads, env):
    """elastix affine + B-spline, then transformix's dense displacement field (fixed -> moving,
    LPS mm, the composed transform): (seconds, peak MB, field path). The timed part is elastix
    and transformix together, as the others' times include writing their fields."""
    require_elastix()
    out = Path(prefix + "elastix")
    out.mkdir(parents=True, exist_ok=True)
    (out / "affine.txt").write_text(ELASTIX_AFFINE)
    (out / "bspline.txt").write_text(ELASTIX_BSPLINE)
    seconds, peak = timed(["elastix", "-f", fixed, "-m", moving, "-p", str(out / "affine.txt"), "-p",
                           str(out / "bspline.txt"), "-out", str(out), "-threads", str(threads)], env)
    more, peak_def = timed(["transformix", "-def", "all", "-tp", str(out / "TransformParameters.1.txt"), "-out",
                            str(out), "-threads", str(threads)], env)
    field = next(out.glob("deformationField.nii*"))
    return seconds + more, max(peak, peak_def), str(field)


def run_method(method, fixed, moving, prefix, args):
    env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    if method in ("pedinorm", "pedinorm-affine"):
        kind = "syn" if method == "pedinorm" else "affine"
        seconds, peak = timed([args.pedinorm, "register", "--fixed", fixed, "--moving", moving, "--transform", kind,
                               "--output", prefix, "--threads", str(args.threads)], env)
        forward = [prefix + "warp.nii.gz", prefix + "affine.txt"] if kind == "syn" else [prefix + "affine.txt"]
        warp = prefix + "warp.nii.gz" if kind == "syn" else None
    elif method.startswith("ants-"):
        kind = {"ants-syn": "SyN", "ants-synquick": "antsRegistrationSyNQuick[s]", "ants-affine": "Affine",
                "ants-synfull": "antsRegistrationSyN[s]"}[method]
        script = Path(prefix + "run.py")
        script.write_text(ANTS_SCRIPT)
        seconds, peak = timed([sys.executable, str(script), fixed, moving, kind, prefix], env)
        forward = json.loads(Path(prefix + "transforms.json").read_text())["forward"]
        warp = next((t for t in forward if t.endswith(".nii.gz")), None)
    elif method == "greedy":
        script = Path(prefix + "run.py")
        script.write_text(GREEDY_SCRIPT)
        seconds, peak = timed([sys.executable, str(script), fixed, moving, prefix, str(args.threads)], env)
        greedy_affine_to_itk(prefix + "affine.mat", prefix + "affine.txt")
        forward = [prefix + "warp.nii.gz", prefix + "affine.txt"]
        warp = prefix + "warp.nii.gz"
    elif method == "elastix":
        seconds, peak, field = run_elastix(fixed, moving, prefix, args.threads, env)
        forward, warp = [field], field
    else:
        raise ValueError(method)
    return seconds, peak, forward, warp


def dice(a, b, label):
    x, y = a == label, b == label
    return 2.0 * np.logical_and(x, y).sum() / max(x.sum() + y.sum(), 1)


def evaluate(pairs, pair, forward, warp):
    import ants
    import pandas as pd
    fixed = ants.image_read(str(pairs / "fixed.nii.gz"))
    labels = ants.image_read(str(pairs / "fixed_labels.nii.gz")).numpy()
    brain = ants.image_read(str(pairs / "fixed_brain.nii.gz")).numpy() > 0.5
    truth = dict(np.load(pair / "truth.npz"))
    grid = ras_affine(fixed)
    points = voxel_points(grid, brain.shape)[brain.reshape(-1)]
    lps = points * np.array([-1.0, -1.0, 1.0])
    mapped = ants.apply_transforms_to_points(3, pd.DataFrame(lps, columns=["x", "y", "z"]), forward).values
    mapped = mapped[:, :3] * np.array([-1.0, -1.0, 1.0])
    back = truth_map(truth, mapped)
    errors = np.linalg.norm(back - points, axis=1)
    moving_labels = ants.image_read(str(pair / "moving_labels.nii.gz"))
    carried = ants.apply_transforms(fixed, moving_labels, forward, interpolator="nearestNeighbor").numpy()
    folds = None
    if warp is not None:
        jac = ants.create_jacobian_determinant_image(fixed, warp).numpy()
        folds = int((jac <= 0).sum())
    return {
        "mean_error_mm": float(errors.mean()),
        "p95_error_mm": float(np.percentile(errors, 95)),
        "dice_gm": float(dice(carried, labels, 1)),
        "dice_wm": float(dice(carried, labels, 2)),
        "non_positive_jacobians": folds,
    }


def identity_errors(pairs, pair):
    import ants
    fixed = ants.image_read(str(pairs / "fixed.nii.gz"))
    brain = ants.image_read(str(pairs / "fixed_brain.nii.gz")).numpy() > 0.5
    points = voxel_points(ras_affine(fixed), brain.shape)[brain.reshape(-1)]
    errors = np.linalg.norm(truth_map(dict(np.load(pair / "truth.npz")), points) - points, axis=1)
    return float(errors.mean())


def run(args):
    ensure_peers()
    if "elastix" in args.methods.split(","):
        # Checked before any method runs, so a missing tool does not surface after minutes of other work.
        require_elastix()
    pairs = Path(args.pairs)
    rows = []
    for pair in sorted(p for p in pairs.iterdir() if p.is_dir() and p.name.startswith("pair")):
        before = identity_errors(pairs, pair)
        for method in args.methods.split(","):
            prefix = str(pair / f"{method}_")
            seconds, peak, forward, warp = run_method(method, str(pairs / "fixed.nii.gz"), str(pair / "moving.nii.gz"), prefix, args)
            row = {"pair": pair.name, "method": method, "seconds": seconds, "peak_mb": peak, "threads": args.threads,
                   "initial_error_mm": before, **evaluate(pairs, pair, forward, warp)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.results).write_text(json.dumps(rows, indent=1))
    summary(rows)


def summary(rows):
    methods = sorted({r["method"] for r in rows}, key=lambda m: [r["method"] for r in rows].index(m))
    print("| method | mean EPE mm | p95 EPE mm | Dice GM | Dice WM | folds | time s | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        mean = lambda k: np.mean([r[k] for r in sel])
        folds = [r["non_positive_jacobians"] for r in sel]
        folds = "-" if folds[0] is None else str(int(sum(folds)))
        print(f"| {m} | {mean('mean_error_mm'):.2f} | {mean('p95_error_mm'):.2f} | {mean('dice_gm'):.3f} | "
              f"{mean('dice_wm'):.3f} | {folds} | {mean('seconds'):.1f} | {mean('peak_mb'):.0f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--resolution", type=int, default=2)
    m.add_argument("--count", type=int, default=3)
    m.add_argument("--seed", type=int, default=2024)
    m.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--pairs", required=True)
    r.add_argument("--methods", default="pedinorm,ants-syn,ants-synquick,greedy")
    r.add_argument("--pedinorm", default=str(ROOT / "target/release/pedinorm"))
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--results", default="registration_results.json")
    s = sub.add_parser("summary")
    s.add_argument("--results", required=True)
    args = parser.parse_args()
    if args.command == "make":
        make(args)
    elif args.command == "run":
        run(args)
    else:
        summary(json.loads(Path(args.results).read_text()))


if __name__ == "__main__":
    main()
