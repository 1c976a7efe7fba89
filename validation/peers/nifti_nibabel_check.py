#!/usr/bin/env python3
"""NIfTI interoperability between pedinorm and nibabel.

Two modes, each working on a folder of `NAME.nii[.gz]` files with `NAME.expected.json` next to
them (`affine`: 4x4 voxel->world, `shape`: x, y, z, components, `data`: one list per
component, voxel values in C order over [i, j, k]):

  nifti_nibabel_check.py check DIR   load every file with nibabel and compare with its JSON
                                     (files written by pedinorm); exit 1 on disagreement
  nifti_nibabel_check.py write DIR   write files with nibabel (every supported voxel type,
                                     scaling, sform-only / qform-only / no transform, 4-D and
                                     5-D) with the JSON that pedinorm must read back
"""
import json
import pathlib
import sys

import nibabel as nib
import numpy as np

AFFINE_TOLERANCE_MM = 1e-4


def components(image):
    """Scaled voxel values as a list of C-order lists, dimensions 4+ flattened (4 fastest)."""
    data = np.asanyarray(image.dataobj).astype(np.float64)
    if data.ndim < 3:
        data = data.reshape(data.shape + (1,) * (3 - data.ndim))
    x, y, z = data.shape[:3]
    flat = data.reshape((x, y, z, -1), order="F")
    return [flat[..., c].ravel(order="C").tolist() for c in range(flat.shape[3])]


def check(folder):
    failures = []
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        failures.append(f"{folder}: no NIfTI files to check")
    for path in files:
        stem = path.name[: -len(".nii.gz")] if path.name.endswith(".gz") else path.name[: -len(".nii")]
        expected = json.loads((folder / f"{stem}.expected.json").read_text())
        image = nib.load(str(path))
        header = image.header
        affine = image.affine
        error = np.abs(affine - np.array(expected["affine"])).max()
        if error > AFFINE_TOLERANCE_MM:
            failures.append(f"{path.name}: affine differs by {error:.3g} mm")
        # Both transforms must agree with each other, so tools reading only one agree too.
        for name, (matrix, code) in {"qform": header.get_qform(coded=True), "sform": header.get_sform(coded=True)}.items():
            if code == 0 or matrix is None:
                failures.append(f"{path.name}: {name}_code is 0")
            elif np.abs(matrix - affine).max() > AFFINE_TOLERANCE_MM:
                failures.append(f"{path.name}: {name} differs from the affine by {np.abs(matrix - affine).max():.3g}")
        got = components(image)
        if len(got) != len(expected["data"]):
            failures.append(f"{path.name}: {len(got)} components, expected {len(expected['data'])}")
            continue
        for index, (a, b) in enumerate(zip(got, expected["data"])):
            a, b = np.array(a), np.array(b)
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = np.abs(a - b).max() if a.shape == b.shape else "shape"
                failures.append(f"{path.name}: component {index} values differ (max {diff})")
        print(f"checked {path.name}: shape {image.shape}, dtype {header.get_data_dtype()}, affine error {error:.2e}")
    return failures


def oblique_affine(spacing, origin):
    ax, ay, az = 0.2, -0.15, 0.3
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ ry @ rz @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def write(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    shape = (5, 6, 7)
    cases = []
    for dtype in ["uint8", "int16", "uint16", "int32", "float32", "float64"]:
        info = np.iinfo(dtype) if dtype.startswith(("u", "i")) else None
        if info is not None:
            data = rng.integers(max(info.min, -30000), min(info.max, 60000), size=shape).astype(dtype)
        else:
            data = rng.normal(100.0, 30.0, size=shape).astype(dtype)
        cases.append((f"oblique_{dtype}", data, oblique_affine((1.0, 1.2, 2.5), (-30.0, 12.5, 7.0)), "both", None))
    scaled = rng.integers(-1000, 1000, size=shape).astype("int16")
    cases.append(("scaled_int16", scaled, oblique_affine((0.9, 0.9, 3.0), (4.0, -8.0, 20.0)), "both", (0.5, -12.0)))
    cases.append(("qform_only", scaled, oblique_affine((1.0, 2.0, 3.0), (1.0, 2.0, 3.0)), "qform", None))
    # A left-handed direction (qfac = -1) is common in radiological files.
    flipped = oblique_affine((1.0, 1.0, 1.5), (0.0, 0.0, 0.0)) @ np.diag([1.0, 1.0, -1.0, 1.0])
    cases.append(("qform_left_handed", scaled, flipped, "qform", None))
    shear = np.array([[1.1, 0.2, 0.0, -3.0], [0.0, 0.9, 0.1, 4.0], [0.05, 0.0, 2.0, 5.0], [0, 0, 0, 1.0]])
    cases.append(("sform_only_sheared", scaled, shear, "sform", None))
    cases.append(("no_transform", scaled, None, "none", None))
    four_d = rng.normal(0.0, 1.0, size=shape + (3,)).astype("float32")
    cases.append(("four_d", four_d, oblique_affine((2.0, 2.0, 2.0), (10, 20, 30)), "both", None))
    five_d = rng.normal(0.0, 1.0, size=shape + (1, 3)).astype("float32")
    cases.append(("five_d_vector", five_d, oblique_affine((2.0, 2.0, 2.0), (10, 20, 30)), "both", None))

    for name, data, affine, transforms, scaling in cases:
        header = nib.Nifti1Header()
        header.set_data_dtype(data.dtype)
        image = nib.Nifti1Image(data, None, header)
        if transforms in ("both", "qform"):
            image.set_qform(affine, code=1)
        if transforms in ("both", "sform"):
            image.set_sform(affine, code=2)
        if transforms in ("qform", "none"):
            image.set_sform(None, code=0)
        if transforms in ("sform", "none"):
            image.set_qform(None, code=0)
        if transforms == "none":
            image.header.set_zooms((1.5, 2.0, 2.5))
        if scaling is not None:
            image.header.set_slope_inter(*scaling)
        if five_d.shape == data.shape:
            image.header.set_intent("vector")
        suffix = ".nii" if name.endswith(("uint8", "int32")) else ".nii.gz"
        path = folder / f"{name}{suffix}"
        nib.save(image, str(path))
        # What pedinorm must read: what nibabel itself reads back from the file.
        loaded = nib.load(str(path))
        expected = {"affine": loaded.affine.tolist(), "shape": list(loaded.shape), "data": components(loaded)}
        (folder / f"{name}.expected.json").write_text(json.dumps(expected))
        print(f"wrote {path.name}")
    return []


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    folder = pathlib.Path(sys.argv[2])
    failures = check(folder) if sys.argv[1] == "check" else write(folder)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
