#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time and prints how long it ran without a crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]   (default 60 s; targets: dicom_series nifti_read transform_read)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds: the DICOM
# test files shipped with pydicom, the compressed enhanced multi-frame MR files of pydicom-data
# (RLE, JPEG-LS, JPEG 2000; both from the .data/venv made by scripts/setup.sh) and small
# NIfTI files written by nibabel, and affine transforms written by ANTs (antspyx: ITK text and
# MATLAB v4 .mat). Findings land in fuzz/artifacts/<target>/ (git-ignored, as
# are fuzz/corpus and fuzz/target). The build goes to $CARGO_TARGET_DIR when it is set, else
# to fuzz/target.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(dicom_series nifti_read transform_read)

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
    exit 2
fi

# Seed corpora.
python=.data/venv/bin/python
mkdir -p fuzz/corpus/dicom_series fuzz/corpus/nifti_read fuzz/corpus/transform_read fuzz/artifacts
if [ -x "$python" ]; then
    "$python" - <<'PY'
import importlib.util, pathlib
import numpy as np, nibabel as nib
files = pathlib.Path(importlib.util.find_spec("pydicom").origin).parent / "data" / "test_files"
corpus = pathlib.Path("fuzz/corpus/dicom_series")
for path in sorted(files.glob("MR_small*.dcm")):
    # The target's first byte says how many objects the rest is cut into: 0 = one.
    (corpus / path.name).write_bytes(b"\x00" + path.read_bytes())
store = importlib.util.find_spec("data_store")
if store:
    for path in sorted((pathlib.Path(store.origin).parent / "data").glob("emri_small_*.dcm")):
        if path.stat().st_size < 64 * 1024:
            (corpus / path.name).write_bytes(b"\x00" + path.read_bytes())
nifti = pathlib.Path("fuzz/corpus/nifti_read")
affine = np.array([[0.9, 0.1, 0, -10], [0, 1.1, 0.2, 5], [0.05, 0, 2.5, 3], [0, 0, 0, 1]])
for dtype in ("uint8", "int16", "float32", "float64"):
    image = nib.Nifti1Image(np.arange(60, dtype=dtype).reshape(3, 4, 5), affine)
    nib.save(image, str(nifti / f"{dtype}.nii"))
    nib.save(image, str(nifti / f"{dtype}.nii.gz"))
try:
    import tempfile, ants
except ImportError:
    ants = None
if ants:
    # The target's first byte selects the reader: odd = MATLAB v4 .mat, even = ITK text.
    transforms = pathlib.Path("fuzz/corpus/transform_read")
    transform = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3,
        matrix=np.array([[1.1, 0.1, 0], [0, 0.9, 0.2], [0.05, 0, 1.0]]),
        offset=np.array([3.0, -2.0, 1.5]), center=np.array([10.0, 20.0, -5.0]))
    with tempfile.TemporaryDirectory() as tmp:
        for suffix, selector in ((".mat", b"\x01"), (".txt", b"\x00")):
            path = pathlib.Path(tmp) / f"affine{suffix}"
            ants.write_transform(transform, str(path))
            (transforms / f"ants_affine{suffix}").write_bytes(selector + path.read_bytes())
PY
fi

target_dir=()
[ -n "${CARGO_TARGET_DIR:-}" ] && target_dir=(--target-dir "$CARGO_TARGET_DIR")
cargo +nightly fuzz build --sanitizer none -O "${target_dir[@]}"
for target in "${targets[@]}"; do
    start=$(date +%s)
    status=0
    cargo +nightly fuzz run --sanitizer none -O "${target_dir[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 >"fuzz/artifacts/$target.log" 2>&1 || status=$?
    elapsed=$(( $(date +%s) - start ))
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "fuzz/artifacts/$target.log" | awk '{print $2}' | tail -1)
    if [ "$status" -eq 0 ]; then
        echo "fuzz: $target ran ${elapsed}s, ${runs:-?} inputs, no crash"
    else
        echo "fuzz: $target stopped after ${elapsed}s with a finding (exit $status); see fuzz/artifacts/$target.log and fuzz/artifacts/$target/"
    fi
done
