"""Images and nibabel: round trips keep data and affine exactly, and files pedinorm writes
read back in nibabel as they were."""

from __future__ import annotations

import nibabel
import numpy as np
import pytest

import pedinorm


def oblique(shape=(7, 9, 5), dtype=np.float32) -> nibabel.Nifti1Image:
    rng = np.random.default_rng(3)
    data = rng.normal(100, 20, shape).astype(dtype)
    angle = 0.2
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.5, 2.0])
    affine[:3, 3] = [-20.0, 5.0, 7.25]
    image = nibabel.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image


def test_from_and_to_nibabel_share_the_array_and_keep_the_affine():
    nib_image = oblique()
    image = pedinorm.Image.from_nibabel(nib_image)
    assert image.data is nib_image.dataobj, "an in-memory nibabel array is taken without a copy"
    back = image.to_nibabel()
    assert back.dataobj is image.data, "the data array is handed to nibabel without a copy"
    np.testing.assert_array_equal(back.affine, nib_image.affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), nib_image.get_fdata(dtype=np.float32))


def test_a_file_nibabel_writes_reads_the_same_in_pedinorm(tmp_path):
    nib_image = oblique()
    path = tmp_path / "oblique.nii.gz"
    nibabel.save(nib_image, path)
    ours = pedinorm.Image.load(path)
    theirs = nibabel.load(path)
    assert ours.data.dtype == np.float32
    np.testing.assert_array_equal(ours.data, theirs.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(ours.affine, theirs.affine)


def test_a_file_pedinorm_writes_reads_the_same_in_nibabel(tmp_path):
    image = pedinorm.Image.from_nibabel(oblique())
    path = tmp_path / "written.nii.gz"
    image.save(path)
    theirs = nibabel.load(path)
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), image.data)
    np.testing.assert_array_equal(theirs.affine, image.affine)
    assert theirs.header.get_sform(coded=True)[1] == 1 and theirs.header.get_qform(coded=True)[1] == 1


def test_labels_keep_their_integer_type(tmp_path):
    labels = pedinorm.Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4))
    path = tmp_path / "labels.nii.gz"
    labels.save(path)
    theirs = nibabel.load(path)
    assert theirs.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(theirs.dataobj), labels.data)


def test_scaled_files_read_as_nibabel_scales_them(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nibabel.Nifti1Image(data, np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nibabel.save(image, path)
    np.testing.assert_array_equal(pedinorm.Image.load(path).data, nibabel.load(path).get_fdata(dtype=np.float32))


def test_every_function_takes_nibabel_images_pairs_and_paths(pair):
    nib_image = nibabel.load(pair["paths"]["fixed"])
    for value in (nib_image, pair["fixed"], pair["paths"]["fixed"], str(pair["paths"]["fixed"])):
        image = pedinorm.as_image(value)
        np.testing.assert_array_equal(image.data, pair["fixed"][0])
        np.testing.assert_array_equal(image.affine, pair["fixed"][1])
    with pytest.raises(TypeError, match="moving: expected an Image"):
        pedinorm.as_image(42, "moving")


def test_errors_name_the_file_and_the_rule(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(pedinorm.PedinormError, match="missing.nii.gz"):
        pedinorm.Image.load(missing)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(pedinorm.PedinormError, match="broken.nii.gz"):
        pedinorm.Image.load(broken)
    four_d = tmp_path / "four_d.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), four_d)
    with pytest.raises(pedinorm.PedinormError, match=r"four_d.nii.gz.*dim.*3-D"):
        pedinorm.Image.load(four_d)
    with pytest.raises(pedinorm.PedinormError, match=r"fixed: affine: expected shape \(4, 4\)"):
        pedinorm.register((np.zeros((4, 4, 4), np.float32), np.eye(3)), (np.zeros((4, 4, 4), np.float32), np.eye(4)))
