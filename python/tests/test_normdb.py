"""NormDb, deviation and volumes on the miniature demo database, against `pedinorm deviation`
and `pedinorm volumes` on the same case."""

from __future__ import annotations

import json

import nibabel
import numpy as np
import pytest

import pedinorm
from conftest import run_cli


@pytest.fixture(scope="module")
def db(demo):
    return pedinorm.NormDb.open(demo["normdb"])


def test_the_database_gives_its_templates_masks_and_model(db, demo):
    brackets = db.brackets
    assert len(brackets) == 1 and brackets[0]["normals"] > 0
    name = brackets[0]["name"]
    assert db.bracket(demo["age"]) == name
    template, mask = db.template(name), db.mask(demo["age"])
    assert template.shape == mask.shape and mask.data.dtype == np.uint8
    np.testing.assert_array_equal(template.affine, mask.affine)
    model = db.model(demo["age"], demo["sex"])
    assert model["bracket"] == name and model["effective_n"] > 0
    inside = mask.data > 0
    assert (model["sd"].data[inside] > 0).all() and (model["sd"].data[~inside] == 0).all()
    assert np.corrcoef(model["mean"].data[inside], template.data[inside])[0, 1] > 0.8
    pooled = db.model(demo["age"], None, channel="logjac")
    assert pooled["sex"] is None and np.abs(pooled["mean"].data[inside]).mean() < 0.5
    calibration = db.calibration
    assert [c["voxel"]["z_threshold"] > 0 for c in calibration["channels"]] == [True, True]
    assert {s["bracket"] for s in db.subjects} == {name}
    priors = db.priors(name)
    assert priors is None or set(priors) == {"csf", "gm", "wm"}


def test_the_database_names_its_file_and_rules(db, tmp_path):
    with pytest.raises(pedinorm.PedinormError, match='no bracket "teen"'):
        db.template("teen")
    with pytest.raises(pedinorm.PedinormError, match='channel "flair": must be intensity or logjac'):
        db.model(10.0, channel="flair")
    with pytest.raises(pedinorm.PedinormError, match='sex "X": must be F or M'):
        db.model(10.0, "X")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(pedinorm.PedinormError, match="broken.h5"):
        pedinorm.NormDb.open(broken)


def test_deviation_equals_the_command_line(db, demo, cli, tmp_path):
    out = tmp_path / "cli"
    run_cli(cli, "deviation", "--normdb", demo["normdb"], "--case", demo["case"], "--age", demo["age"],
            "--sex", demo["sex"], "--site", demo["site"], "--out-dir", out)
    result = pedinorm.deviation(db, nibabel.load(demo["case"]), demo["age"], demo["sex"], site=demo["site"])
    for channel in ("intensity", "logjac"):
        np.testing.assert_array_equal(result.z[channel].data, pedinorm.Image.load(out / f"{channel}_z.nii.gz").data)
        np.testing.assert_array_equal(result.z_native[channel].data,
                                      pedinorm.Image.load(out / f"{channel}_z_native.nii.gz").data)
    theirs = nibabel.load(out / "clusters.nii.gz")
    np.testing.assert_array_equal(result.clusters_map.data, np.asarray(theirs.dataobj))
    report = json.loads((out / "report.json").read_text())
    for key in ("bracket", "clusters", "regions", "thresholds", "reliability", "warnings", "sd_floors", "registration"):
        assert result.report[key] == report[key], key
    significant = [c for c in result.clusters if c["label"] > 0]
    assert significant, "the white-matter lesion is found"
    columns = result.table("thresholds")
    assert columns["channel"] == ["intensity", "logjac"]
    assert len(result.table("regions").get("name", [])) == len(result.regions)


def test_volumes_equal_the_command_line(db, demo, cli, tmp_path):
    if db.priors(db.bracket(demo["age"])) is None:
        pytest.fail("the miniature database keeps tissue priors")
    out = tmp_path / "volumes"
    run_cli(cli, "volumes", "--normdb", demo["normdb"], "--image", demo["case"], "--age", demo["age"],
            "--sex", demo["sex"], "--subject", "case", "--out-dir", out)
    result = pedinorm.volumes(db, demo["case"], demo["age"], demo["sex"], subject="case")
    theirs = json.loads((out / "volumes.json").read_text())
    assert result.summary == theirs
    for name, image in result.tissues.items():
        np.testing.assert_array_equal(image.data, pedinorm.Image.load(out / f"{name}.nii.gz").data)
    assert result.measures["total_brain"] > 0
