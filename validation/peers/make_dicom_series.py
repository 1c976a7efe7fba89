#!/usr/bin/env python3
"""Writes synthetic DICOM MR series with known geometry and values, for testing series assembly.

    make_dicom_series.py OUT_DIR [--source T1.nii.gz] [--shrink 4] [CASE ...]

Each case is a folder OUT_DIR/CASE holding the series (files named in shuffled order) and
either `expected.nii.gz` (or `expected_1.nii.gz`, `expected_2.nii.gz` for series that must split),
the volume pedinorm must produce — real values (rescale applied), RAS+ affine computed here
independently from the IOP/IPP/PixelSpacing written — or `expected_error.txt`, a phrase the
error message must contain. The voxels come from a real brain (`--source`, downsampled by
`--shrink`) or, without one, from a smooth synthetic phantom.

Cases: axial, oblique, implicit (implicit VR little endian), rle (RLE lossless, written by
pydicom), jpegls and jpeg_lossless (compressed with dcmtk's dcmcjpls / dcmcjpeg when installed),
enhanced (enhanced MR multi-frame with per-frame functional groups, frames stored out of order),
shuffled (InstanceNumbers unrelated to position), multiecho (two echoes in one series),
rescaled (signed values with RescaleSlope/Intercept), missing (one slice removed),
nonuniform (one slice displaced), tilted (positions drift sideways).

No patient identity is real: names and IDs are fixed fakes, used to check they never leak.
"""
import argparse
import json
import pathlib
import random
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    EnhancedMRImageStorage,
    RLELossless,
    generate_uid,
)

CASES = [
    "axial", "oblique", "implicit", "rle", "jpegls", "jpeg_lossless", "enhanced", "shuffled",
    "multiecho", "rescaled", "missing", "nonuniform", "tilted",
]
FAKE_NAME = "Fake^Patient"
FAKE_ID = "FAKEID-0042"
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def rotation(ax, ay, az):
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz


def source_volume(path, shrink):
    """Stored values [col, row, slice] as uint16-range integers."""
    if path and pathlib.Path(path).exists():
        data = np.asanyarray(nib.load(path).dataobj).astype(np.float64)
        data = data[::shrink, ::shrink, ::shrink]
        data = data / max(data.max(), 1e-9) * 1000.0
    else:
        x, y, z = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 44), np.linspace(-1, 1, 24), indexing="ij")
        data = 800.0 * np.exp(-(x**2 / 0.5 + y**2 / 0.6 + z**2 / 0.4)) + 100.0 * (x > 0.2) + 50.0 * (y < -0.3)
    return np.round(data).astype(np.int32)


def base_dataset(study_uid, series_uid, series_number, description):
    ds = Dataset()
    ds.PatientName = FAKE_NAME
    ds.PatientID = FAKE_ID
    ds.PatientBirthDate = "20150310"
    ds.PatientSex = "F"
    ds.PatientAge = "009Y"
    ds.StudyDate = "20240915"
    ds.SeriesDate = "20240915"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.Modality = "MR"
    ds.Manufacturer = "Synthetic"
    ds.ManufacturerModelName = "Phantom 3T"
    ds.MagneticFieldStrength = 3
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = "GR\\IR"
    ds.SequenceVariant = "SP\\MP"
    ds.MRAcquisitionType = "3D"
    ds.RepetitionTime = 2000
    ds.EchoTime = 3.5
    ds.InversionTime = 900
    ds.FlipAngle = 9
    ds.FrameOfReferenceUID = generate_uid(UID_ROOT, entropy_srcs=[study_uid, "frame-of-reference"])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    return ds


def file_meta(sop_class, sop_instance, syntax):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = UID_ROOT + "1"
    return meta


def geometry(case, shape, spacing):
    """Row/column directions (LPS), first position and per-slice positions."""
    cols, rows, slices = shape
    r = rotation(0.25, -0.15, 0.1) if case in ("oblique", "enhanced", "jpegls") else np.eye(3)
    row_dir, col_dir = r[:, 0], r[:, 1]
    normal = np.cross(row_dir, col_dir)
    origin = np.array([-0.5 * cols * spacing[1], -0.5 * rows * spacing[0], -0.4 * slices * spacing[2]])
    positions = [origin + k * spacing[2] * normal for k in range(slices)]
    if case == "tilted":
        positions = [p + k * 0.2 * col_dir for k, p in enumerate(positions)]
    if case == "nonuniform":
        positions[slices // 2] = positions[slices // 2] + 0.4 * spacing[2] * normal
    return row_dir, col_dir, positions


def ras_affine(row_dir, col_dir, positions, spacing):
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_classic(out, case, volume, rng, study_uid):
    spacing = (1.1, 0.9, 2.5)  # between rows, between columns, between slices
    series_uid = generate_uid(UID_ROOT)
    row_dir, col_dir, positions = geometry(case, volume.shape, spacing)
    echoes = [(1, 3.5), (2, 9.0)] if case == "multiecho" else [(None, 3.5)]
    slope, intercept = (0.5, -200.0) if case == "rescaled" else (1.0, 0.0)
    stored = volume - 300 if case == "rescaled" else volume
    order = list(range(volume.shape[2]))
    skip = {volume.shape[2] // 2} if case == "missing" else set()
    files = []
    for echo_number, echo_time in echoes:
        echo_values = stored if echo_number in (None, 1) else (stored * 0.6).astype(np.int32)
        instance_numbers = list(range(1, len(order) + 1))
        if case == "shuffled":
            rng.shuffle(instance_numbers)
        for k in order:
            if k in skip:
                continue
            ds = base_dataset(study_uid, series_uid, 3, f"T1 synthetic {case}")
            sop = generate_uid(UID_ROOT)
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop
            ds.InstanceNumber = instance_numbers[k] + (0 if echo_number in (None, 1) else 1000)
            ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in list(row_dir) + list(col_dir)]
            ds.PixelSpacing = [spacing[0], spacing[1]]
            ds.SliceThickness = spacing[2]
            ds.SpacingBetweenSlices = spacing[2]
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
            ds.PixelRepresentation = 1 if case == "rescaled" else 0
            if echo_number is not None:
                ds.EchoNumbers = echo_number
            ds.EchoTime = echo_time
            if case == "rescaled":
                ds.RescaleSlope = slope
                ds.RescaleIntercept = intercept
            pixels = echo_values[:, :, k].T
            pixels = pixels.astype(np.int16 if case == "rescaled" else np.uint16)
            ds.PixelData = np.ascontiguousarray(pixels).tobytes()
            syntax = ImplicitVRLittleEndian if case == "implicit" else ExplicitVRLittleEndian
            ds.file_meta = file_meta(MRImageStorage, sop, syntax)
            if case == "rle":
                ds.compress(RLELossless, encoding_plugin="pydicom")
            files.append(ds)
    rng.shuffle(files)
    for index, ds in enumerate(files):
        ds.save_as(out / f"IM{index:04d}.dcm", enforce_file_format=True)
    expected = []
    for echo_number, _ in echoes:
        values = stored if echo_number in (None, 1) else (stored * 0.6).astype(np.int32)
        expected.append(values.astype(np.float64) * slope + intercept)
    return expected, ras_affine(row_dir, col_dir, positions, spacing)


def write_enhanced(out, volume, rng, study_uid):
    spacing = (1.1, 0.9, 2.5)
    series_uid = generate_uid(UID_ROOT)
    row_dir, col_dir, positions = geometry("enhanced", volume.shape, spacing)
    slices = volume.shape[2]
    order = list(range(slices))
    rng.shuffle(order)  # frames stored out of spatial order
    ds = base_dataset(study_uid, series_uid, 5, "T1 synthetic enhanced")
    sop = generate_uid(UID_ROOT)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = sop
    ds.InstanceNumber = 1
    ds.NumberOfFrames = slices
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
    ds.PixelRepresentation = 0
    for keyword in ("RepetitionTime", "EchoTime", "InversionTime", "FlipAngle"):
        delattr(ds, keyword)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{v:.8f}" for v in list(row_dir) + list(col_dir)]
    shared.PlaneOrientationSequence = Sequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [spacing[0], spacing[1]]
    measures.SliceThickness = spacing[2]
    measures.SpacingBetweenSlices = spacing[2]
    shared.PixelMeasuresSequence = Sequence([measures])
    timing = Dataset()
    timing.RepetitionTime = 2000
    timing.FlipAngle = 9
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    echo = Dataset()
    echo.EffectiveEchoTime = 3.5
    shared.MREchoSequence = Sequence([echo])
    transform = Dataset()
    transform.RescaleSlope = 2.0
    transform.RescaleIntercept = 10.0
    transform.RescaleType = "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index, k in enumerate(order):
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        group.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        group.FrameContentSequence = Sequence([content])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    frames = np.stack([volume[:, :, k].T.astype(np.uint16) for k in order])
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.file_meta = file_meta(EnhancedMRImageStorage, sop, ExplicitVRLittleEndian)
    ds.save_as(out / "ENHANCED.dcm", enforce_file_format=True)
    return [volume.astype(np.float64) * 2.0 + 10.0], ras_affine(row_dir, col_dir, positions, spacing)


def dcmtk_compress(out, tool, extra):
    for path in sorted(out.glob("*.dcm")):
        compressed = path.with_suffix(".tmp")
        subprocess.run([tool, *extra, str(path), str(compressed)], check=True, capture_output=True)
        compressed.replace(path)


def write_case(root, case, volume, seed):
    out = root / case
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    study_uid = generate_uid(UID_ROOT)
    if case in ("jpegls", "jpeg_lossless"):
        tool = "dcmcjpls" if case == "jpegls" else "dcmcjpeg"
        if shutil.which(tool) is None:
            shutil.rmtree(out)
            print(f"skipped {case}: {tool} (dcmtk) is not installed", file=sys.stderr)
            return False
    if case == "enhanced":
        expected, affine = write_enhanced(out, volume, rng, study_uid)
    else:
        expected, affine = write_classic(out, case, volume, rng, study_uid)
    if case == "jpegls":
        dcmtk_compress(out, "dcmcjpls", ["--encode-lossless"])
    if case == "jpeg_lossless":
        dcmtk_compress(out, "dcmcjpeg", ["--encode-lossless-sv1"])
    errors = {"missing": "missing slice", "nonuniform": "non-uniform slice spacing", "tilted": "gantry tilt"}
    if case in errors:
        (out / "expected_error.txt").write_text(errors[case] + "\n")
    else:
        for index, values in enumerate(expected):
            name = "expected.nii.gz" if len(expected) == 1 else f"expected_{index + 1}.nii.gz"
            image = nib.Nifti1Image(values.astype(np.float32), affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            nib.save(image, str(out / name))
    (out / "case.json").write_text(json.dumps({"case": case, "volumes": len(expected), "shape": list(volume.shape)}))
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("cases", nargs="*", default=CASES, help="cases to write (default: all)")
    parser.add_argument("--source", help="NIfTI volume giving the voxel values (default: a synthetic phantom)")
    parser.add_argument("--shrink", type=int, default=4, help="downsampling factor of --source")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_intermixed_args()
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {' '.join(CASES)}")
    volume = source_volume(args.source, args.shrink)
    written = [case for case in args.cases if write_case(args.out_dir, case, volume, args.seed)]
    print(f"wrote {len(written)} cases to {args.out_dir}: {' '.join(written)} (volume {volume.shape})")


if __name__ == "__main__":
    main()
