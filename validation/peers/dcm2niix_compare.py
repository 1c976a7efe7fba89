#!/usr/bin/env python3
"""Compare `pedinorm convert` with dcm2niix on the same DICOM series.

    dcm2niix_compare.py --pedinorm BIN --work DIR [--cases CASE ...] [--no-real]
                        [--bench-shrink N] [--repeat N] [--only NAME ...] [--report FILE]

For every series: run both converters (timed, wall clock), reorient both outputs to the closest
RAS+ canonical orientation with nibabel, pair each pedinorm volume with the dcm2niix volume of
the same shape and nearest affine (a 4-D dcm2niix output -- time points, diffusion directions --
is split into its 3-D volumes, as pedinorm writes one volume per time point), and compare affines (max |difference| over the 4x4, must be
<= 1e-3 mm) and voxel values (max |difference|, must be <= 1e-4 of the value range).

Series: the synthetic cases of make_dicom_series.py (written into DIR/synthetic from the MNI T1
under .data/mni when present), a larger axial series for timing (`bench`, MNI T1 downsampled by
--bench-shrink), and, unless --no-real, real files shipped inside the Python packages of the
environment (pydicom's test files and dicomdirtests MR series, nibabel's nicom test data, and
every MR file of pydicom-data: the enhanced multi-frame `emri_small` in native, big-endian, RLE,
JPEG-LS and JPEG 2000 encodings, a Siemens MR with overlays, a 1024x1024 MR in lossless and
lossy JPEG 2000 and their uncompressed twins).

The `emri_small` files carry no geometry at all (no functional groups: no
ImageOrientationPatient, ImagePositionPatient or PixelSpacing; dcm2niix writes them with
sform/qform code 0, "unknown"). Besides the files as shipped, each is compared once more as
`<name>_placed`: a copy with an oblique geometry added in the functional groups (shared
PixelMeasures and PlaneOrientation, per-frame PlanePosition 1.2 mm apart along the normal, the
file's SpacingBetweenSlices) and the pixel data left byte for byte as shipped, so that the
compressed multi-frame decoding of both programs is compared on real encoded data.

dcm2niix's wheel decodes neither RLE, JPEG lossless, JPEG-LS nor JPEG 2000: it reads a copy
decompressed by dcmtk (RLE, JPEG, JPEG-LS) or by pydicom with pylibjpeg-openjpeg (JPEG 2000).

Times are the shortest of --repeat runs of each program (wall clock, process start included).

Prints a Markdown table (also written to --report) and exits 1 when a series that pedinorm
converts disagrees with dcm2niix (series pedinorm refuses by rule are listed, not failed).
"""
import argparse
import gzip
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
AFFINE_TOLERANCE_MM = 1e-3
VALUE_TOLERANCE = 1e-4


def run(command):
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    return time.perf_counter() - start, result


def canonical(path):
    image = nib.as_closest_canonical(nib.load(str(path)))
    return image.affine, np.asanyarray(image.get_fdata(dtype=np.float64))


def canonical_volumes(path):
    """(label, affine, 3-D data) per volume: a 4-D file (dcm2niix's time series and diffusion
    series, where pedinorm writes one file per volume) is split along its fourth axis."""
    affine, data = canonical(path)
    if data.ndim == 3:
        return [(path.name, affine, data)]
    data = data.reshape(data.shape[:3] + (-1,))
    return [(f"{path.name}[{t}]", affine, data[..., t]) for t in range(data.shape[3])]


def volumes_in(folder):
    return sorted(p for p in folder.glob("*.nii.gz") if not is_overlay(p))


def is_overlay(path):
    """dcm2niix writes each overlay plane (group 60xx, graphics drawn over the image, not image
    data) as `<name>_ROI<n>.nii.gz`: not a volume of the series."""
    return re.search(r"_ROI\d+\.nii\.gz$", path.name) is not None


# dcm2niix's wheel cannot decode these: give it a copy decompressed by dcmtk instead (JPEG 2000,
# which Debian's dcmtk cannot decode, by pydicom with pylibjpeg-openjpeg).
PYDICOM_DECOMPRESS = "pydicom+pylibjpeg-openjpeg"
DECOMPRESSORS = {
    "1.2.840.10008.1.2.4.90": PYDICOM_DECOMPRESS,
    "1.2.840.10008.1.2.4.91": PYDICOM_DECOMPRESS,
    "1.2.840.10008.1.2.5": "dcmdrle",
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
    "1.2.840.10008.1.2.4.57": "dcmdjpeg",
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.4.50": "dcmdjpeg",
    "1.2.840.10008.1.2.4.51": "dcmdjpeg",
}


def decompressed_copy(series_input, target):
    import pydicom

    files = [p for p in sorted(pathlib.Path(series_input).rglob("*")) if p.is_file()]
    plan = []
    for path in files:
        try:
            syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except Exception:
            continue
        plan.append((path, DECOMPRESSORS.get(syntax)))
    tools = sorted({tool for _, tool in plan if tool})
    if not tools or any(shutil.which(tool) is None for tool in tools if tool != PYDICOM_DECOMPRESS):
        return series_input, None
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for index, (path, tool) in enumerate(plan):
        destination = target / f"{index:05d}.dcm"
        if tool == PYDICOM_DECOMPRESS:
            dataset = pydicom.dcmread(path)
            try:
                dataset.decompress()
            except Exception as error:  # e.g. a truncated code stream: dcm2niix gets the original
                print(f"{path.name}: pydicom cannot decompress it ({error})", file=sys.stderr)
                shutil.copy(path, destination)
                continue
            # pydicom decompresses the top-level pixel data only: a JPEG 2000 thumbnail in an
            # IconImageSequence would stay encapsulated inside a native-syntax file, which
            # dcm2niix then misreads as the image's pixel data. The icon is not part of the image.
            if "IconImageSequence" in dataset:
                del dataset.IconImageSequence
            dataset.save_as(destination, enforce_file_format=True)
        elif tool:
            subprocess.run([tool, str(path), str(destination)], check=True, capture_output=True)
        else:
            shutil.copy(path, destination)
    return target, "/".join(tools)


def timed(command, repeat, out):
    """Runs `command` `repeat` times, each into an emptied `out`; the shortest wall-clock time
    and the last result."""
    best, result = None, None
    for _ in range(max(repeat, 1)):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        elapsed, result = run(command)
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def compare_series(name, origin, series_input, work, pedinorm, dcm2niix, repeat=1):
    ped_out = work / "pedinorm" / name
    d2n_out = work / "dcm2niix" / name
    for folder in (ped_out, d2n_out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    ped_time, ped = timed([pedinorm, "convert", series_input, "--out-dir", ped_out], repeat, ped_out)
    d2n_input, decompressed = decompressed_copy(series_input, work / "decompressed" / name)
    d2n_time, d2n = timed([dcm2niix, "-z", "y", "-b", "n", "-f", "%s_%e_%r", "-o", d2n_out, d2n_input], repeat,
                          d2n_out)
    if decompressed:
        by = decompressed if decompressed == PYDICOM_DECOMPRESS else f"dcmtk {decompressed}"
        origin += f" (dcm2niix reads a copy decompressed by {by})"
    row = {"series": name, "origin": origin, "ped_time": ped_time, "d2n_time": d2n_time}
    ped_volumes, d2n_volumes = volumes_in(ped_out), volumes_in(d2n_out)
    overlays = sorted(p.name for p in d2n_out.glob("*.nii.gz") if is_overlay(p))
    if overlays:
        row["origin"] += f" (dcm2niix also writes its overlay plane(s) {', '.join(overlays)}: not compared)"
    if ped.returncode != 0:
        reason = (ped.stderr.strip().splitlines() or ["?"])[-1]
        row.update(verdict="pedinorm refuses", detail=reason[:160], volumes=f"0 / {len(d2n_volumes)}")
        return row
    if not d2n_volumes:
        # The peer cannot read the input: nothing to compare against (not counted as agreement).
        row.update(verdict="not compared, dcm2niix cannot read it",
                   detail=(d2n.stdout.strip().splitlines() or ["?"])[-1][:160], volumes=f"{len(ped_volumes)} / 0")
        return row
    d2n_loaded = [volume for p in d2n_volumes for volume in canonical_volumes(p)]
    worst_affine, worst_value, shapes, unmatched = 0.0, 0.0, [], []
    for path in ped_volumes:
        affine, data = canonical(path)
        candidates = [(np.abs(a - affine).max(), p, a, d) for p, a, d in d2n_loaded if d.shape[:3] == data.shape[:3]]
        if not candidates:
            unmatched.append(f"{path.name} {data.shape} has no dcm2niix volume of that shape "
                             f"({', '.join(str(d.shape) for _, _, d in d2n_loaded)})")
            continue
        # Several volumes of one series can share shape and affine (echoes, repeats, diffusion
        # directions): pair by affine first, then by values.
        span = max(float(np.ptp(data)), 1e-9)

        def errors(candidate):
            affine_error, _, _, other = candidate
            value_error = float(np.abs(other - data).max()) / span if other.shape == data.shape else np.inf
            return (affine_error > AFFINE_TOLERANCE_MM, value_error, affine_error)

        _, value_error, affine_error = min(errors(c) for c in candidates)
        worst_affine, worst_value = max(worst_affine, affine_error), max(worst_value, value_error)
        shapes.append("×".join(str(s) for s in data.shape))
    if len(ped_volumes) != len(d2n_loaded):
        unmatched.append(f"{len(ped_volumes)} pedinorm volume(s) for {len(d2n_loaded)} dcm2niix volume(s)")
    agree = not unmatched and worst_affine <= AFFINE_TOLERANCE_MM and worst_value <= VALUE_TOLERANCE
    row.update(
        verdict="agree" if agree else "DISAGREE",
        detail="; ".join(unmatched)[:200],
        volumes=f"{len(ped_volumes)} / {len(d2n_loaded)}",
        shape=", ".join(shapes),
        affine=worst_affine,
        value=worst_value,
        disagree=not agree,
    )
    return row


# Geometry given to the multi-frame files that have none (see the module docstring): an oblique
# orientation (rotations of 20 degrees about z, then 15 degrees about the row direction), pixel
# spacing 0.9 mm between rows and 0.8 mm between columns, first voxel at PLACED_ORIGIN (LPS).
PLACED_ROW = (0.939693, 0.342020, 0.0)
PLACED_COLUMN = (0.088521, -0.243210, -0.965926)
PLACED_ORIGIN = (-30.25, -41.75, 12.5)
PLACED_SPACING = (0.9, 0.8)


def placed_copy(source, destination):
    """Copy of an enhanced multi-frame object without functional groups, with the geometry above
    added (the file's SpacingBetweenSlices, else 1 mm, between frames); the pixel data, native or
    compressed, are written back as read."""
    import pydicom
    from pydicom.dataset import Dataset

    dataset = pydicom.dcmread(source)
    frames = int(dataset.NumberOfFrames)
    step = float(dataset.get("SpacingBetweenSlices") or 1.0)
    normal = np.cross(PLACED_ROW, PLACED_COLUMN)
    measures = Dataset()
    measures.PixelSpacing = [f"{v:.6f}" for v in PLACED_SPACING]
    measures.SliceThickness = f"{step:.6f}"
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.6f}" for v in PLACED_ROW + PLACED_COLUMN]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    dataset.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for frame in range(frames):
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in np.add(PLACED_ORIGIN, normal * step * frame)]
        item = Dataset()
        item.PlanePositionSequence = [position]
        per_frame.append(item)
    dataset.PerFrameFunctionalGroupsSequence = per_frame
    dataset.save_as(destination, enforce_file_format=True)


def real_series(staging):
    """(name, origin, input path) of real series shipped inside installed packages."""
    found = []

    def package_dir(module):
        spec = importlib.util.find_spec(module)
        return pathlib.Path(spec.origin).parent if spec and spec.origin else None

    pydicom_dir = package_dir("pydicom")
    if pydicom_dir:
        files = pydicom_dir / "data" / "test_files"
        for name in ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                     "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_expb.dcm",
                     "MR_small_padded.dcm"]:
            if (files / name).exists():
                folder = staging / pathlib.Path(name).stem
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(files / name, folder / name)
                found.append((pathlib.Path(name).stem, f"pydicom test_files/{name}", folder))
        for series in ["98892003/MR700", "98892003/MR2", "98892003/MR1", "98892001/MR2"]:
            folder = files / "dicomdirtests" / series
            if folder.is_dir():
                found.append(("dicomdir_" + series.replace("/", "_"), f"pydicom dicomdirtests/{series}", folder))
    nibabel_dir = package_dir("nibabel")
    if nibabel_dir:
        data = nibabel_dir / "nicom" / "tests" / "data"
        mprage = data / "philips_mprage.dcm.gz"
        if mprage.exists():
            folder = staging / "philips_mprage"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "philips_mprage.dcm").write_bytes(gzip.decompress(mprage.read_bytes()))
            found.append(("philips_mprage", "nibabel nicom/tests/data/philips_mprage.dcm.gz", folder))
        for name in ["0.dcm", "1.dcm", "decimal_rescale.dcm", "slicethickness_empty_string.dcm"]:
            if (data / name).exists():
                folder = staging / ("nibabel_" + pathlib.Path(name).stem)
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy(data / name, folder / name)
                found.append(("nibabel_" + pathlib.Path(name).stem, f"nibabel nicom/tests/data/{name}", folder))
        # Two Siemens DWI mosaics (b=0 and b=1000) of one series: two volumes.
        dwi = [data / "siemens_dwi_0.dcm.gz", data / "siemens_dwi_1000.dcm.gz"]
        if all(p.exists() for p in dwi):
            folder = staging / "nibabel_siemens_dwi"
            folder.mkdir(parents=True, exist_ok=True)
            for path in dwi:
                (folder / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
            found.append(("nibabel_siemens_dwi", "nibabel nicom/tests/data/siemens_dwi_{0,1000}.dcm.gz", folder))
    store_dir = package_dir("data_store")  # pydicom-data
    if store_dir:
        import pydicom

        for path in sorted((store_dir / "data").glob("*.dcm")):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if header.get("Modality") != "MR":
                continue
            folder = staging / path.stem
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / path.name)
            found.append((path.stem, f"pydicom-data {path.name}", folder))
            frames = int(header.get("NumberOfFrames") or 1)
            if frames > 1 and "PerFrameFunctionalGroupsSequence" not in header:
                placed = staging / f"{path.stem}_placed"
                placed.mkdir(parents=True, exist_ok=True)
                try:
                    placed_copy(path, placed / path.name)
                except Exception as error:  # pydicom cannot rewrite it (a truncated file)
                    print(f"{path.name}: no placed copy ({error!r})", file=sys.stderr)
                    continue
                found.append((f"{path.stem}_placed", f"pydicom-data {path.name}, oblique geometry added", placed))
    extra = ROOT / ".data" / "dicom"
    if extra.is_dir():
        for folder in sorted(p for p in extra.iterdir() if p.is_dir()):
            found.append((folder.name, f".data/dicom/{folder.name}", folder))
    return found


def table(rows):
    lines = [
        "| series | origin | volumes (pedinorm / dcm2niix) | shape (RAS canonical) | max affine diff (mm) | "
        "max value diff (of range) | pedinorm s | dcm2niix s | ratio | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        affine = f"{r['affine']:.2e}" if "affine" in r else "–"
        value = f"{r['value']:.2e}" if "value" in r else "–"
        ratio = f"{r['ped_time'] / r['d2n_time']:.2f}" if r["d2n_time"] > 0 else "–"
        verdict = r["verdict"] + (f": {r['detail']}" if r.get("detail") else "")
        lines.append(
            f"| {r['series']} | {r['origin']} | {r.get('volumes', '')} | {r.get('shape', '')} | {affine} | {value} | "
            f"{r['ped_time']:.2f} | {r['d2n_time']:.2f} | {ratio} | {verdict.replace('|', '/')} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", required=True, type=pathlib.Path)
    parser.add_argument("--dcm2niix", type=pathlib.Path, default=pathlib.Path(sys.executable).parent / "dcm2niix")
    parser.add_argument("--work", required=True, type=pathlib.Path)
    parser.add_argument("--cases", nargs="*", help="synthetic cases (default: all)")
    parser.add_argument("--no-real", action="store_true", help="skip the real series from packages")
    parser.add_argument("--bench-shrink", type=int, default=0, help="add the timing series `bench` (MNI T1 / N)")
    parser.add_argument("--only", nargs="*", help="compare only the series of these names (synthetic or real)")
    parser.add_argument("--repeat", type=int, default=1, help="run each converter N times, keep the fastest")
    parser.add_argument("--report", type=pathlib.Path, help="also write the table to this file")
    args = parser.parse_args()

    work = args.work.resolve()
    synthetic = work / "synthetic"
    source = ROOT / ".data" / "mni" / "t1.nii.gz"
    generator = [sys.executable, HERE / "make_dicom_series.py", synthetic, "--source", source, "--shrink", "4"]
    _, result = run(generator + (args.cases or []))
    if result.returncode != 0:
        sys.exit(f"make_dicom_series.py failed: {result.stderr}")
    series = [(p.name, "synthetic", p) for p in sorted(synthetic.iterdir()) if p.is_dir()]
    if args.bench_shrink:
        bench = work / "bench"
        command = [sys.executable, HERE / "make_dicom_series.py", bench, "axial", "--source", source,
                   "--shrink", str(args.bench_shrink)]
        _, result = run(command)
        if result.returncode != 0:
            sys.exit(f"make_dicom_series.py failed: {result.stderr}")
        series.append((f"bench (MNI T1 / {args.bench_shrink})", "synthetic", bench / "axial"))
    if not args.no_real:
        series += real_series(work / "real")

    if args.only:
        series = [s for s in series if s[0] in args.only]
        missing = set(args.only) - {s[0] for s in series}
        if missing:
            sys.exit(f"no series named {', '.join(sorted(missing))}")
    rows = []
    for name, origin, path in series:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        rows.append(compare_series(safe, origin, path, work, args.pedinorm, args.dcm2niix, args.repeat))
        print(f"{name}: {rows[-1]['verdict']} {rows[-1].get('detail', '')}", file=sys.stderr)
    text = table(rows)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    failures = [r for r in rows if r.get("disagree")]
    agreed = sum(r["verdict"] == "agree" for r in rows)
    print(f"\n{agreed} of {len(rows)} series agree; {len(failures)} disagree", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
