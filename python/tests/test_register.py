"""register, apply_transforms and jacobian against the command line on the same inputs: the
same threads give bit-identical transforms and images, and the transforms saved are the
files `pedinorm register` writes."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest

import pedinorm
from conftest import run_cli


@pytest.fixture(scope="module")
def registered(pair, cli):
    """The pair registered by the command line (files under PREFIX) and by Python."""
    prefix = f"{pair['folder']}/cli_"
    run_cli(cli, "register", "--fixed", pair["paths"]["fixed"], "--moving", pair["paths"]["moving"],
            "--output", prefix, "--threads", 2)
    result = pedinorm.register(nibabel.load(pair["paths"]["fixed"]), nibabel.load(pair["paths"]["moving"]), threads=2)
    return prefix, result


def test_register_equals_the_command_line_bit_for_bit(registered, tmp_path):
    prefix, result = registered
    cli_warped = pedinorm.Image.load(f"{prefix}warped.nii.gz")
    np.testing.assert_array_equal(result.warped.data, cli_warped.data)
    np.testing.assert_array_equal(result.warped.affine, cli_warped.affine)
    written = result.save(f"{tmp_path}/py_")
    assert [p.rsplit("/", 1)[1] for p in written] == [
        "py_affine.txt", "py_warp.nii.gz", "py_inverse_warp.nii.gz", "py_warped.nii.gz"]
    assert (tmp_path / "py_affine.txt").read_text() == open(f"{prefix}affine.txt").read()
    for name in ("warp.nii.gz", "inverse_warp.nii.gz"):
        ours, theirs = nibabel.load(tmp_path / f"py_{name}"), nibabel.load(f"{prefix}{name}")
        assert ours.shape == theirs.shape and ours.header["intent_code"] == theirs.header["intent_code"] == 1007
        np.testing.assert_array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
        np.testing.assert_array_equal(ours.affine, theirs.affine)


def test_the_result_recovers_the_pair_and_its_parts_are_consistent(registered, pair):
    _, result = registered
    fixed = pair["fixed"][0]
    inside = fixed > 0
    before = np.abs(pair["moving"][0] - fixed)[inside].mean()
    after = np.abs(result.warped.data - fixed)[inside].mean()
    assert after < 0.5 * before, (before, after)
    assert [t.kind for t in result.forward_transforms] == ["field", "affine"]
    assert [t.kind for t in result.inverse_transforms] == ["affine", "field"]
    # The moving phantom is the fixed one shifted by (3, -2, 1.5) mm: the centre maps there.
    centre = result.transform_points([[0.0, 0.0, 0.0]])[0]
    np.testing.assert_allclose(centre, [3.0, -2.0, 1.5], atol=1.0)
    back = result.transform_points(result.transform_points([[5.0, 4.0, -3.0]]), inverse=True)
    np.testing.assert_allclose(back[0], [5.0, 4.0, -3.0], atol=0.5)
    # Applying the forward transforms is how `warped` was made.
    np.testing.assert_array_equal(result.apply(pair["moving"]).data, result.warped.data)


def test_apply_transforms_equals_pedinorm_apply(registered, pair, cli, tmp_path):
    prefix, _ = registered
    labels = (pair["moving"][0] > 50).astype(np.int16) + (pair["moving"][0] > 90)
    labels_path = tmp_path / "labels.nii.gz"
    pedinorm.Image(labels, pair["moving"][1]).save(labels_path)
    for interpolation in ("linear", "label"):
        source = pair["paths"]["moving"] if interpolation == "linear" else labels_path
        out = tmp_path / f"cli_{interpolation}.nii.gz"
        run_cli(cli, "apply", "-r", pair["paths"]["fixed"], "-i", source, "-t", f"{prefix}warp.nii.gz",
                "-t", f"{prefix}affine.txt", "-n", interpolation, "-o", out)
        ours = pedinorm.apply_transforms(pair["paths"]["fixed"], source,
                                         [f"{prefix}warp.nii.gz", f"{prefix}affine.txt"], interpolation=interpolation)
        theirs = nibabel.load(out)
        assert ours.data.dtype == theirs.get_data_dtype(), interpolation
        np.testing.assert_array_equal(ours.data, np.asarray(theirs.dataobj))
        np.testing.assert_array_equal(ours.affine, theirs.affine)
    inverse = pedinorm.apply_transforms(pair["moving"], pair["fixed"], [f"[{prefix}affine.txt,1]", f"{prefix}inverse_warp.nii.gz"])
    assert inverse.shape == pair["moving"][0].shape


def test_jacobian_equals_pedinorm_jacobian(registered, cli, tmp_path):
    prefix, result = registered
    for log in (False, True):
        out = tmp_path / f"jacobian_{log}.nii.gz"
        run_cli(cli, "jacobian", "--warp", f"{prefix}warp.nii.gz", "--output", out, *(["--log-jacobian"] if log else []))
        ours = pedinorm.jacobian(f"{prefix}warp.nii.gz", log=log)
        np.testing.assert_array_equal(ours.data, pedinorm.Image.load(out).data)
        np.testing.assert_array_equal(result.jacobian(log=log).data, ours.data)
    assert (pedinorm.jacobian(result).data > 0).all(), "the field does not fold"


def test_affine_presets_and_transform_objects(pair):
    result = pedinorm.register(pair["fixed"], pair["moving"], preset="rigid", metric="ncc", threads=1)
    assert result.warp is None and [t.kind for t in result.forward_transforms] == ["affine"]
    matrix = result.affine.matrix
    np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-6)
    same = pedinorm.Transform.from_matrix(matrix)
    np.testing.assert_array_equal(same.transform_points(np.array([[1.0, 2.0, 3.0]])),
                                  result.affine.transform_points(np.array([[1.0, 2.0, 3.0]])))
    data, affine = pedinorm.register(pair["fixed"], pair["moving"], threads=1).warp.field_data
    assert data.shape == (*pair["fixed"][0].shape, 3)
    rebuilt = pedinorm.Transform.from_field(data, affine)
    assert rebuilt.kind == "field"


def test_register_refuses_what_does_not_fit_naming_the_rule(pair, tmp_path):
    with pytest.raises(pedinorm.PedinormError, match="preset 'elastic'"):
        pedinorm.register(pair["fixed"], pair["moving"], preset="elastic")
    with pytest.raises(pedinorm.PedinormError, match="metric cc: a deformable metric"):
        pedinorm.register(pair["fixed"], pair["moving"], preset="affine", metric="cc")
    small = (np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(pedinorm.PedinormError, match="fixed_mask: must have the fixed image's shape"):
        pedinorm.register(pair["fixed"], pair["moving"], fixed_mask=small)
    with pytest.raises(pedinorm.PedinormError, match="absent.txt"):
        pedinorm.apply_transforms(pair["fixed"], pair["moving"], [str(tmp_path / "absent.txt")])
    with pytest.raises(pedinorm.PedinormError, match="interpolation: unknown interpolation `cubic`"):
        pedinorm.apply_transforms(pair["fixed"], pair["moving"], [pedinorm.Transform.from_matrix(np.eye(4))], "cubic")
