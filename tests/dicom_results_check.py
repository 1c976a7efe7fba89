"""Reads pedinorm's DICOM result objects back with pydicom and highdicom and checks them
against the NIfTI outputs of the same deviation run.

Usage: dicom_results_check.py --results DIR --source DIR --clusters clusters_native.nii.gz
                              --report report.json [--strict]

Checks: every object parses; the segmentation is a highdicom Segmentation whose segments are
the report's significant clusters, whose frames (read per source slice with highdicom) set
exactly the voxels of the NIfTI cluster map on the slice each source image lies on; every
object is in the source study; dciodvfy (Debian dicom3tools) reports no error on any object
(with --strict a missing dciodvfy is a failure, else the check is skipped). Prints a JSON
summary on success and exits non-zero with a message on any failure.
"""

import argparse
import json
import pathlib
import shutil
import subprocess
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def load_dir(folder):
    objects = []
    for path in sorted(pathlib.Path(folder).rglob("*.dcm")):
        objects.append((path, pydicom.dcmread(path)))
    return objects


def dciodvfy(root, paths, strict):
    tool = shutil.which("dciodvfy")
    if tool is None:
        if strict:
            fail("dciodvfy not found (install Debian's dicom3tools)")
        return {"skipped": "dciodvfy not installed"}
    report = {}
    for path in paths:
        run = subprocess.run([tool, str(path)], capture_output=True, text=True)
        lines = (run.stdout + run.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        if errors:
            fail(f"dciodvfy {path.name}: " + " | ".join(errors))
        report[str(path.relative_to(root))] = [line for line in lines if line.startswith("Warning")]
    return {"warnings_per_object": report}


def voxel_index(affine_inverse, lps):
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    return affine_inverse @ ras


def check_seg(seg_path, sources, clusters, report):
    seg = hd.seg.segread(seg_path)
    significant = [c for c in report["clusters"] if c["significant"] and c["label"] > 0]
    numbers = list(seg.segment_numbers)
    if numbers != list(range(1, len(numbers) + 1)):
        fail(f"segment numbers {numbers} are not 1..N")
    labels = [seg.get_segment_description(n).segment_label for n in numbers]
    if len(numbers) != len(significant):
        fail(f"{len(numbers)} segments for {len(significant)} significant clusters: {labels}")
    for label in labels:
        channel, sign, _, _ = label.split(" ")
        if channel not in ("intensity", "logjac") or sign not in ("z>0", "z<0"):
            fail(f"segment label {label!r} does not name channel and sign")
    category = seg.get_segment_description(1).segmented_property_category
    if category.value != "49755003" or category.scheme_designator != "SCT":
        fail(f"segment category {category}")
    if seg.SegmentationType != "BINARY":
        fail(f"SegmentationType {seg.SegmentationType}")

    # Each source image's slice in the NIfTI map, from its position.
    image = nib.load(clusters)
    data = np.asarray(image.dataobj)
    inverse = np.linalg.inv(image.affine)
    uids, slices = [], []
    for ds in sources.values():
        index = voxel_index(inverse, [float(v) for v in ds.ImagePositionPatient])
        k = int(round(index[2]))
        if abs(index[0]) > 1e-3 or abs(index[1]) > 1e-3 or abs(index[2] - k) > 1e-3:
            fail(f"source {ds.SOPInstanceUID} is not on a slice of the NIfTI grid: {index}")
        uids.append(ds.SOPInstanceUID)
        slices.append(k)
    referenced = {uid for (_, _, uid) in seg.get_source_image_uids()}
    if referenced - set(uids):
        fail("the segmentation references images outside the source series")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        combine_segments=False,
        assert_missing_frames_are_empty=True,
    )
    # pixels: (instances, rows, columns, segments); NIfTI [i, j, k] is (column, row, slice).
    segmented = pixels.any(axis=3)
    voxels = 0
    for n, k in enumerate(slices):
        expected = data[:, :, k].T > 0
        if not np.array_equal(segmented[n], expected):
            diff = int(np.sum(segmented[n] != expected))
            fail(f"slice {k}: the segmentation differs from the NIfTI cluster map in {diff} voxels")
        voxels += int(expected.sum())
    if voxels == 0:
        fail("the cluster map is empty: nothing was compared")
    return {"segments": labels, "frames": int(seg.NumberOfFrames), "voxels": voxels}


def check_sr(sr_path, seg_path, clusters, report):
    """The report parses as a highdicom Comprehensive3DSR holding a TID 1500 measurement
    report; each volumetric group references a segment of the segmentation and states its
    volume in ml, equal to the segment's voxels times the voxel volume, and its peak z."""
    sr = hd.sr.srread(sr_path)
    if not isinstance(sr, hd.sr.Comprehensive3DSR):
        fail(f"the SR reads as {type(sr).__name__}, not Comprehensive3DSR")
    measurement_report = sr.content
    if not isinstance(measurement_report, hd.sr.MeasurementReport):
        fail(f"the SR content is {type(measurement_report).__name__}, not a MeasurementReport")
    seg = hd.seg.segread(seg_path)
    zooms = nib.load(clusters).header.get_zooms()[:3]
    voxel_ml = float(np.prod(zooms)) / 1000.0
    groups = measurement_report.get_volumetric_roi_measurement_groups()
    if len(groups) != len(seg.segment_numbers):
        fail(f"{len(groups)} volumetric groups for {len(seg.segment_numbers)} segments")
    pixels = seg.pixel_array.reshape((int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)))
    frame_segments = [
        int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    volumes = {}
    for group in groups:
        referenced = group.referenced_segment[0].ReferencedSOPSequence[0]
        segment = int(referenced.ReferencedSegmentNumber)
        if referenced.ReferencedSOPInstanceUID != seg.SOPInstanceUID:
            fail("a measurement group references another segmentation")
        volume = group.get_measurements(name=codes.SCT.Volume)
        if len(volume) != 1 or volume[0].unit.value != "ml":
            fail(f"segment {segment}: no volume in ml")
        peak = [m for m in group.get_measurements() if m.name.value == "PEAKZ"]
        if len(peak) != 1:
            fail(f"segment {segment}: no peak z")
        voxels = int(sum(pixels[i].sum() for i, n in enumerate(frame_segments) if n == segment))
        expected = voxels * voxel_ml
        if abs(float(volume[0].value) - expected) > 1e-3 * max(1.0, expected):
            fail(f"segment {segment}: volume {volume[0].value} ml, the segment holds {expected} ml")
        volumes[str(group.tracking_identifier)] = float(volume[0].value)
    regions = len(measurement_report.get_image_measurement_groups())
    return {"cluster_volumes_ml": volumes, "other_groups": regions}


def tool(name, strict):
    path = shutil.which(name)
    if path is None and strict:
        fail(f"{name} not found (install Debian's poppler-utils)")
    return path


def check_pdf(documents, results, labels, warnings, strict):
    """One encapsulated PDF (the same bytes as report.pdf when that file is there): one page,
    rendered by pdftoppm to a picture that is not blank, whose text (pdftotext) holds the
    cluster table with every segment label, and the report's first warning when it has one."""
    if len(documents) != 1:
        fail(f"expected one encapsulated PDF, found {len(documents)}")
    ds = documents[0]
    if ds.MIMETypeOfEncapsulatedDocument != "application/pdf":
        fail(f"MIME type {ds.MIMETypeOfEncapsulatedDocument}")
    pdf = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    loose = pathlib.Path(results) / "report.pdf"
    if loose.exists() and loose.read_bytes() != pdf:
        fail("report.pdf differs from the encapsulated document")
    work = pathlib.Path(results).parent / "pdf_check"
    work.mkdir(exist_ok=True)
    path = work / "report.pdf"
    path.write_bytes(pdf)
    pdftoppm, pdftotext = tool("pdftoppm", strict), tool("pdftotext", strict)
    if pdftoppm is None or pdftotext is None:
        return {"skipped": "poppler-utils not installed"}
    subprocess.run([pdftoppm, "-r", "50", "-gray", str(path), str(work / "page")], check=True)
    pages = sorted(work.glob("page*.pgm"))
    if len(pages) != 1:
        fail(f"the report has {len(pages)} pages, not one")
    raw = pages[0].read_bytes()
    # Binary PGM: header "P5\n<w> <h>\n255\n", then the pixels.
    header = raw.split(b"\n", 3)
    pixels = np.frombuffer(header[3], dtype=np.uint8)
    dark = float(np.mean(pixels < 128))
    if dark < 0.01:
        fail(f"the rendered page is blank ({dark:.4f} dark)")
    text = subprocess.run([pdftotext, "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    for needle in ["Significant clusters", "Caveats", *labels]:
        if needle not in text:
            fail(f"the report's text lacks {needle!r}")
    if warnings:
        # The first plain-ASCII words of the first warning (the page wraps long lines and
        # spells a few symbols out).
        start = " ".join([w for w in warnings[0].split() if w.isascii()][:4])
        if "Warnings" not in text or start not in " ".join(text.split()):
            fail(f"the report's text lacks its first warning {start!r}")
    return {"dark_fraction": round(dark, 4), "characters": len(text)}


def check_fused(objects, sources):
    """One RGB picture per source slice in each fused series, each naming its source slice;
    the series with coloured pixels are counted."""
    by_series = {}
    for ds in objects:
        by_series.setdefault(ds.SeriesDescription, []).append(ds)
    if len(by_series) != 2:
        fail(f"expected two fused series, found {sorted(by_series)}")
    coloured = {}
    for description, series in by_series.items():
        if len(series) != len(sources):
            fail(f"{description}: {len(series)} pictures for {len(sources)} source slices")
        pixels = 0
        for ds in series:
            if ds.PhotometricInterpretation != "RGB" or ds.SamplesPerPixel != 3:
                fail(f"{description}: not RGB")
            if ds.SourceImageSequence[0].ReferencedSOPInstanceUID not in sources:
                fail(f"{description}: a picture does not name a source slice")
            rgb = ds.pixel_array.astype(int)
            # Exclude the colour bar (the last 72 columns).
            picture = rgb[:, :-72, :]
            pixels += int(np.sum((picture[..., 0] != picture[..., 1]) | (picture[..., 1] != picture[..., 2])))
        coloured[description] = pixels
    if not any(coloured.values()):
        fail(f"no coloured pixel in the fused series: {coloured}")
    return coloured


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--clusters", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--strict", action="store_true")
    args = parser.parse_args()
    report = json.loads(pathlib.Path(args.report).read_text())
    sources = {ds.SOPInstanceUID: ds for _, ds in load_dir(args.source)}
    if not sources:
        fail(f"no source objects in {args.source}")
    study = next(iter(sources.values())).StudyInstanceUID
    results = [(p, ds) for p, ds in load_dir(args.results) if ds.SOPInstanceUID not in sources]
    summary = {"objects": len(results)}
    for path, ds in results:
        if ds.StudyInstanceUID != study:
            fail(f"{path.name} is not in the source study")
    segs = [p for p, ds in results if ds.SOPClassUID == SEGMENTATION]
    if len(segs) != 1:
        fail(f"expected one segmentation, found {len(segs)}")
    summary["seg"] = check_seg(segs[0], sources, args.clusters, report)
    srs = [p for p, ds in results if ds.SOPClassUID == COMPREHENSIVE_3D_SR]
    if len(srs) != 1:
        fail(f"expected one structured report, found {len(srs)}")
    summary["sr"] = check_sr(srs[0], segs[0], args.clusters, report)
    documents = [ds for _, ds in results if ds.SOPClassUID == ENCAPSULATED_PDF]
    summary["pdf"] = check_pdf(
        documents, args.results, summary["seg"]["segments"], report.get("warnings", []), args.strict
    )
    summary["fused"] = check_fused([ds for _, ds in results if ds.SOPClassUID == SECONDARY_CAPTURE], sources)
    # dciodvfy on one object of every series written here (a source series written beside the
    # results, for a case from NIfTI, included; a source series from elsewhere is not ours).
    source_is_ours = pathlib.Path(args.source).resolve().is_relative_to(pathlib.Path(args.results).resolve())
    checked, seen = [], set()
    for path, ds in load_dir(args.results):
        ours = source_is_ours or ds.SOPInstanceUID not in sources
        if ours and ds.SeriesInstanceUID not in seen:
            seen.add(ds.SeriesInstanceUID)
            checked.append(path)
    summary["dciodvfy"] = dciodvfy(pathlib.Path(args.results), checked, args.strict)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
