"""Images as numpy arrays with a 4x4 voxel-to-world RAS+ affine, and their conversion to and
from nibabel images."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np

from . import _native

__all__ = ["Image", "ImageLike", "as_image"]


class Image:
    """A 3-D image: ``data`` of shape ``(x, y, z)`` indexed ``[i, j, k]`` (as nibabel's) and a
    4x4 ``affine`` mapping voxel indices to world RAS+ millimetres.

    ``Image(data, affine)`` keeps the arrays it is given (no copy); ``to_nibabel()`` hands the
    same data array to ``nibabel.Nifti1Image``, and ``from_nibabel()`` takes a nibabel image's
    array without a copy when it holds one in memory (a file-backed image is read once).
    """

    __slots__ = ("data", "affine")

    def __init__(self, data: Any, affine: Any) -> None:
        data = np.asarray(data)
        affine = np.asarray(affine, dtype=np.float64)
        if data.ndim != 3:
            raise _native.PedinormError(f"data: expected 3 dimensions (x, y, z), found shape {data.shape}")
        if affine.shape != (4, 4):
            raise _native.PedinormError(f"affine: expected shape (4, 4), found {affine.shape}")
        self.data = data
        self.affine = affine

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's dimensions."""
        return self.data.shape  # type: ignore[return-value]

    @classmethod
    def from_nibabel(cls, image: Any) -> "Image":
        """The data (scaled as nibabel scales it) and affine of a nibabel image."""
        data = np.asanyarray(image.dataobj)
        if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
            data = data.reshape(data.shape[:3])
        return cls(data, image.affine)

    def to_nibabel(self) -> Any:
        """This image as a ``nibabel.Nifti1Image`` sharing the data array (sform and qform
        set to the affine, as pedinorm writes files)."""
        import nibabel

        image = nibabel.Nifti1Image(self.data, self.affine)
        image.set_qform(self.affine, code=1)
        image.set_sform(self.affine, code=1)
        return image

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Image":
        """Reads a 3-D NIfTI file as pedinorm's command line does (float32, scaling applied;
        sform, then qform, then the base affine). Errors name the file and the field."""
        data, affine = _native.read_image(os.fspath(path))
        return cls(data, affine)

    def save(self, path: Union[str, os.PathLike], dtype: str | None = None) -> None:
        """Writes the image as NIfTI (``.nii`` or ``.nii.gz``), voxels stored as ``dtype``
        (float32, uint8 or int16; default: int16/uint8 data keeps its type, anything else is
        float32)."""
        if dtype is None:
            dtype = self.data.dtype.name if self.data.dtype.name in ("uint8", "int16") else "float32"
        _native.write_image(os.fspath(path), as_float32(self.data), self.affine, dtype)

    def __repr__(self) -> str:
        return f"Image(shape={self.shape}, dtype={self.data.dtype.name})"


ImageLike = Union[Image, "tuple[Any, Any]", str, os.PathLike, Any]
"""An image as the functions of this package take it: an :class:`Image`, a nibabel image, a
``(data, affine)`` pair, or the path of a NIfTI file."""


def as_image(value: ImageLike, name: str = "image") -> Image:
    """``value`` as an :class:`Image` (see :data:`ImageLike`); ``name`` labels errors."""
    if isinstance(value, Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Image.load(value)
    if isinstance(value, tuple) and len(value) == 2:
        try:
            return Image(*value)
        except _native.PedinormError as error:
            raise _native.PedinormError(f"{name}: {error}") from None
    if hasattr(value, "dataobj") and hasattr(value, "affine"):
        return Image.from_nibabel(value)
    raise TypeError(
        f"{name}: expected an Image, a nibabel image, a (data, affine) pair or a file path, "
        f"not {type(value).__name__}"
    )


def as_float32(data: np.ndarray) -> np.ndarray:
    """The data as float32, the compute's type (no copy when it already is)."""
    return np.asarray(data, dtype=np.float32)


def native(value: ImageLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data, affine)`` ready for the extension module."""
    image = as_image(value, name)
    return as_float32(image.data), image.affine


def from_native(pair: tuple[np.ndarray, np.ndarray], dtype: str = "float32") -> Image:
    """An image from the extension module's ``(data, affine)``, cast to ``dtype`` (labels)."""
    data, affine = pair
    if dtype != "float32":
        data = np.rint(data).astype(dtype)
    return Image(data, affine)
