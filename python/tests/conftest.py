"""Fixtures of the Python package's tests: the command-line binary the package is compared
with, small synthetic images, and the miniature normative database the Rust test runner
(`tests/python_package.rs`) builds and names in PEDINORM_TEST_DEMO."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _required(reason: str):
    """Fails under CI (where everything must run), skips elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cli() -> Path:
    """The `pedinorm` binary: PEDINORM_BIN, else the workspace's debug build."""
    named = os.environ.get("PEDINORM_BIN")
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = Path(named) if named else target / "debug" / "pedinorm"
    if not binary.is_file():
        _required(f"no pedinorm binary at {binary} (build it, or set PEDINORM_BIN)")
    return binary


def run_cli(cli: Path, *args: object) -> subprocess.CompletedProcess:
    """Runs the command line and fails the test with its output when it fails."""
    words = [str(cli), *(str(a) for a in args)]
    done = subprocess.run(words, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(words)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def demo() -> dict:
    """The miniature demo (database, a case with a white-matter lesion and its age, sex and
    site) that tests/python_package.rs builds."""
    named = os.environ.get("PEDINORM_TEST_DEMO")
    if not named:
        _required("PEDINORM_TEST_DEMO is not set: run through `cargo test --test python_package`")
    summary = json.loads(Path(named, "summary.json").read_text())
    case = summary["cases"][0]
    report = json.loads(Path(case["out_dir"], "report.json").read_text())
    return {
        "normdb": summary["normdb"],
        "case": report["case"],
        "age": case["age_years"],
        "sex": report["sex"],
        "site": case["site"],
    }


def phantom(shift=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0), dims=(40, 46, 36), spacing=2.0) -> tuple[np.ndarray, np.ndarray]:
    """A brain-like phantom (nested ellipsoids with two 'ventricles') on a `spacing` mm grid
    centred on the origin, shifted and scaled: `(data float32, affine)`."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * spacing / 2 for n in dims]
    i, j, k = np.meshgrid(*(np.arange(n) for n in dims), indexing="ij")
    x = (i * spacing + affine[0, 3] - shift[0]) / scale[0]
    y = (j * spacing + affine[1, 3] - shift[1]) / scale[1]
    z = (k * spacing + affine[2, 3] - shift[2]) / scale[2]
    r = np.sqrt((x / 30) ** 2 + (y / 38) ** 2 + (z / 28) ** 2)
    data = np.where(r < 1.0, 60.0, 0.0) + np.where(r < 0.8, 40.0, 0.0)
    for side in (-1, 1):
        v = np.sqrt(((x - side * 7) / 4) ** 2 + (y / 12) ** 2 + ((z - 4) / 5) ** 2)
        data = np.where(v < 1.0, 20.0, data)
    data += 5.0 * np.cos(x / 6.0) * np.cos(y / 7.0) * (r < 1.0)
    return data.astype(np.float32), affine


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> dict:
    """A fixed and a moving phantom, in memory and as files."""
    import nibabel

    folder = tmp_path_factory.mktemp("pair")
    fixed = phantom()
    moving = phantom(shift=(3.0, -2.0, 1.5), scale=(1.08, 0.95, 1.03))
    paths = {}
    for name, (data, affine) in (("fixed", fixed), ("moving", moving)):
        image = nibabel.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        paths[name] = folder / f"{name}.nii.gz"
        nibabel.save(image, paths[name])
    return {"fixed": fixed, "moving": moving, "paths": paths, "folder": folder}
