#!/usr/bin/env python3
"""Digests of a small fixed-seed `pedinorm demo` run, to show that a change keeps every number.

Runs the demo (a synthetic cohort, one template per bracket, the HDF5 normative database and
the deviation maps of the cases) with fixed settings, then writes one SHA-256 per output:
every HDF5 dataset and attribute (by its path inside the file), the voxel data and affine of
every NIfTI file, every JSON file with wall times and absolute paths left out, and every other
output file byte for byte. Compared with `validation/golden/demo.sha256`, a difference names the
output that changed.

    demo_digest.py --pedinorm target/debug/pedinorm --work work/digest            # print
    demo_digest.py --pedinorm … --work … --check validation/golden/demo.sha256   # compare
    demo_digest.py --pedinorm … --work … --update validation/golden/demo.sha256  # rewrite
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

# Fields whose values depend on the machine or the clock, not on the computation.
VOLATILE_KEYS = {"seconds", "timings", "wall_seconds", "elapsed_seconds", "created", "created_at",
                 "started_at", "finished_at", "modified_utc", "created_utc", "time", "timestamp", "out_dir", "normdb",
                 "path", "paths", "hostname", "version", "software_version"}

DEMO_ARGS = ["--normals", "16", "--cases", "2", "--resolution", "4", "--brackets", "2",
             "--min-age", "2", "--max-age", "14", "--sites", "0", "--held-out-normals", "0",
             "--template-iterations", "1", "--seed", "7"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strip_volatile(value):
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    return value


def attr_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        # Variable-length strings: their bytes are pointers, so digest the decoded text.
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
        return json.dumps([list(array.shape), text]).encode()
    return array.tobytes()


def digest_hdf5(path: Path, name: str):
    rows = []
    with h5py.File(path, "r") as handle:
        def visit(item_name, item):
            for key in sorted(item.attrs):
                if key in VOLATILE_KEYS:
                    continue
                rows.append((sha(attr_bytes(item.attrs[key])), f"{name}:{item_name}@{key}"))
            if isinstance(item, h5py.Dataset):
                data = item[()]
                payload = attr_bytes(data) + str(getattr(data, "dtype", "")).encode()
                rows.append((sha(payload), f"{name}:{item_name}"))
        for key in sorted(handle.attrs):
            if key in VOLATILE_KEYS:
                continue
            value = handle.attrs[key]
            if key == "history":
                # One line per change, each led by its time: keep what was done, not when.
                text = value.decode() if isinstance(value, bytes) else str(value)
                value = "\n".join(line.split(" ", 1)[-1] for line in text.splitlines())
            rows.append((sha(attr_bytes(value)), f"{name}:@{key}"))
        handle.visititems(visit)
    return rows


def digest_nifti(path: Path, name: str):
    import nibabel
    image = nibabel.load(str(path))
    data = np.asarray(image.dataobj)
    payload = data.tobytes() + str(data.dtype).encode() + np.asarray(image.affine).tobytes()
    return [(sha(payload), name)]


def digest_tree(root: Path):
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        suffixes = "".join(path.suffixes[-2:])
        if path.suffix in (".h5", ".hdf5"):
            rows.extend(digest_hdf5(path, name))
        elif suffixes.endswith(".nii.gz") or path.suffix == ".nii":
            rows.extend(digest_nifti(path, name))
        elif path.suffix == ".json":
            value = strip_volatile(json.loads(path.read_text()))
            rows.append((sha(json.dumps(value, sort_keys=True).encode()), name))
        elif path.suffix in (".log", ".lock") or path.name.startswith("."):
            continue
        elif path.suffix == ".gz":
            rows.append((sha(gzip.decompress(path.read_bytes())), name))
        else:
            rows.append((sha(path.read_bytes()), name))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pedinorm", required=True, help="the pedinorm binary")
    parser.add_argument("--work", required=True, help="scratch folder (emptied first)")
    parser.add_argument("--threads", default="2", help="RAYON_NUM_THREADS of the run")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", help="digest file to compare with")
    mode.add_argument("--update", help="digest file to rewrite")
    args = parser.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, RAYON_NUM_THREADS=args.threads)
    command = [args.pedinorm, "demo", "--out-dir", str(work / "demo"), "--jobs", "1", *DEMO_ARGS]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    lines = [f"{digest}  {name}" for digest, name in digest_tree(work / "demo")]

    if args.update:
        Path(args.update).write_text("\n".join(lines) + "\n")
        print(f"{len(lines)} digests written to {args.update}")
    elif args.check:
        expected = Path(args.check).read_text().splitlines()
        old = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in expected if line}
        new = {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in lines}
        changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
        missing = sorted(old.keys() - new.keys())
        added = sorted(new.keys() - old.keys())
        for label, names in (("changed", changed), ("missing", missing), ("new", added)):
            for name in names:
                print(f"{label}: {name}")
        if changed or missing or added:
            print(f"demo digests differ: {len(changed)} changed, {len(missing)} missing, "
                  f"{len(added)} new of {len(old)}")
            sys.exit(1)
        print(f"demo digests identical ({len(new)} outputs)")
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
