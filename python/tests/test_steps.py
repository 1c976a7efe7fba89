"""preprocess and segment against `pedinorm preprocess` and `pedinorm segment` on the same
inputs: the same images, masks and volumes."""

from __future__ import annotations

import json

import nibabel
import numpy as np
import pytest

import pedinorm
from conftest import phantom, run_cli


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    """The phantom under a smooth multiplicative bias field, as a file."""
    data, affine = phantom()
    i = np.arange(data.shape[0])[:, None, None]
    data = (data * (1.0 + 0.25 * (i / data.shape[0] - 0.5))).astype(np.float32)
    path = tmp_path_factory.mktemp("steps") / "biased.nii.gz"
    pedinorm.Image(data, affine).save(path)
    return path


def test_preprocess_equals_the_command_line(biased, cli, tmp_path):
    out, mask, field = tmp_path / "out.nii.gz", tmp_path / "mask.nii.gz", tmp_path / "field.nii.gz"
    options = ["--steps", "bias,normalize", "--shrink-factor", "2", "--bias-iterations", "20x20"]
    run_cli(cli, "preprocess", biased, "-o", out, "--mask-output", mask, "--field-output", field, *options)
    result = pedinorm.preprocess(nibabel.load(biased), steps="bias,normalize", shrink_factor=2, bias_iterations="20x20")
    np.testing.assert_array_equal(result.image.data, pedinorm.Image.load(out).data)
    np.testing.assert_array_equal(result.field.data, pedinorm.Image.load(field).data)
    theirs = nibabel.load(mask)
    assert result.mask.data.dtype == np.uint8 and theirs.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(result.mask.data, np.asarray(theirs.dataobj))
    assert result.mask_source == "foreground"


def test_preprocess_refuses_unknown_options_naming_them(biased):
    with pytest.raises(pedinorm.PedinormError, match="steps: unknown step `deskull`"):
        pedinorm.preprocess(biased, steps="bias,deskull")
    with pytest.raises(pedinorm.PedinormError, match="bias iterations `20xx`"):
        pedinorm.preprocess(biased, bias_iterations="20xx")
    with pytest.raises(pedinorm.PedinormError, match="normalization: this method needs a template"):
        pedinorm.preprocess(biased, normalization="nyul")


def test_segment_equals_the_command_line(biased, cli, tmp_path):
    out = tmp_path / "segmentation"
    run_cli(cli, "segment", "--image", biased, "--tissues", "csf,gm,wm", "--out-dir", out)
    result = pedinorm.segment(biased, tissues=["csf", "gm", "wm"])
    assert result.tissues == ["csf", "gm", "wm"]
    for name in result.tissues:
        np.testing.assert_array_equal(result.probabilities[name].data, pedinorm.Image.load(out / f"{name}.nii.gz").data)
    np.testing.assert_array_equal(result.labels.data, np.asarray(nibabel.load(out / "labels.nii.gz").dataobj))
    theirs = json.loads((out / "segmentation.json").read_text())
    assert result.summary["tissues"] == theirs["tissues"]
    assert result.summary["images"] == theirs["images"]
    assert sum(result.volumes.values()) > 0


def test_segment_with_named_priors_in_memory():
    data, affine = phantom()
    r = data > 0
    priors = {
        "csf": (np.where(data == 20, 0.9, 0.05).astype(np.float32) * r, affine),
        "gm": (np.where((data > 50) & (data < 70), 0.9, 0.05).astype(np.float32) * r, affine),
        "wm": (np.where(data > 90, 0.9, 0.05).astype(np.float32) * r, affine),
    }
    result = pedinorm.segment((data, affine), priors=priors)
    assert result.tissues == ["csf", "gm", "wm"] and result.summary["priors"]
    assert result.labels.data.max() == 3
    with pytest.raises(pedinorm.PedinormError, match="gm: the prior is not on the grid of images"):
        pedinorm.segment((data, affine), priors={"csf": priors["csf"], "gm": (data[:-1], affine)})
