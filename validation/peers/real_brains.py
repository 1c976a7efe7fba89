#!/usr/bin/env python3
"""Deviation maps of real brains the synthetic generator never made, against a database.

Each case is a brain-extracted image (NIfTI) with its age, and what it is: `normal` (a healthy
brain of the stated contrast, T1w) or `mismatch` (another contrast, another age range: the
database does not represent it and the report must say so). For every case the script runs
`pedinorm deviation`, then reads `report.json` and the template-space z-maps and prints one row
per case: the share of brain voxels beyond |z| > 3 and beyond the calibrated threshold per
channel, the significant clusters, and whether the comparison was flagged unreliable (with the
indices that flagged it).

    real_brains.py --pedinorm target/release/pedinorm --normdb out/demo/normdb.h5 \
        --work work/real --case chris_t1 brain.nii.gz 17 normal --case t2w t2w.nii.gz 17 mismatch

The images are not shipped with the repository (see validation/RESULTS.md for where the ones
measured there come from).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np


def summarize(name: str, kind: str, out_dir: Path) -> dict:
    report = json.loads((out_dir / "report.json").read_text())
    row = {"case": name, "kind": kind}
    for channel, threshold in zip(("intensity", "logjac"), report["thresholds"]):
        z = nib.load(out_dir / f"{channel}_z.nii.gz").get_fdata()
        inside = z != 0
        limit = threshold["z_threshold"]
        row[f"{channel}_beyond_3"] = float(np.mean(np.abs(z[inside]) > 3.0))
        row[f"{channel}_beyond_threshold"] = float(np.mean(np.abs(z[inside]) > limit))
    row["significant_clusters"] = sum(1 for c in report["clusters"] if c.get("significant"))
    reliability = report["reliability"]
    row["reliable"] = reliability["reliable"]
    row["flagged_by"] = [a["name"] for a in reliability["indices"] if a.get("flagged")]
    if any("age" in r for r in reliability["reasons"]):
        row["flagged_by"].append("age")
    row["site"] = report.get("site", {}).get("kind", "")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", required=True)
    parser.add_argument("--normdb", required=True)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--site", help="the scanner or site of every case, as recorded for the database's normals")
    parser.add_argument("--case", nargs=4, action="append", metavar=("NAME", "IMAGE", "AGE", "KIND"), required=True)
    args = parser.parse_args()
    rows = []
    failures = []
    for name, image, age, kind in args.case:
        if kind not in ("normal", "mismatch"):
            parser.error(f"case {name}: kind must be normal or mismatch, not {kind}")
        out_dir = args.work / name
        command = [args.pedinorm, "deviation", "--normdb", args.normdb, "--case", image, "--age", age, "--out-dir", str(out_dir)]
        if args.site:
            command += ["--site", args.site]
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            # One refused case does not stop the others; its row says why.
            print(f"{name}: pedinorm deviation failed: {run.stderr.strip()}", file=sys.stderr)
            failures.append((name, kind, run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed"))
            continue
        rows.append(summarize(name, kind, out_dir))
    print("| case | kind | intensity: |z|>3 / >threshold | log-Jacobian: |z|>3 / >threshold | significant clusters | flagged unreliable (by) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        flagged = "**yes** (" + ", ".join(r["flagged_by"]) + ")" if not r["reliable"] else "no"
        print(
            f"| {r['case']} | {r['kind']} | {100 * r['intensity_beyond_3']:.2f} % / {100 * r['intensity_beyond_threshold']:.2f} % "
            f"| {100 * r['logjac_beyond_3']:.2f} % / {100 * r['logjac_beyond_threshold']:.2f} % | {r['significant_clusters']} | {flagged} |"
        )
    for name, kind, why in failures:
        print(f"| {name} | {kind} | refused: {why} | | | |")
    (args.work / "summary.json").write_text(json.dumps(rows, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
