"""Registration and transforms: ``register``, ``apply_transforms`` and ``jacobian``."""

from __future__ import annotations

import os
from typing import Any, Sequence, Union

import numpy as np

from . import _native
from ._image import Image, ImageLike, as_image, from_native, native
from ._native import Transform

__all__ = ["RegistrationResult", "register", "apply_transforms", "jacobian", "PRESETS"]

PRESETS = {
    "default": "syn",
    "syn": "syn",
    "affine": "affine",
    "rigid": "rigid",
}
"""Registration presets and the transform model of ``pedinorm register`` each runs:
``default``/``syn`` (affine by mutual information, then greedy diffeomorphic by squared local
cross-correlation, ``antsRegistrationSyN.sh``'s stages), ``affine`` and ``rigid``."""

TransformLike = Union[Transform, str, os.PathLike]
"""A transform: a :class:`Transform`, or a file as antsApplyTransforms takes it (``file`` or
``[file,1]`` for an affine's inverse)."""


def _as_transform(value: TransformLike) -> Transform:
    if isinstance(value, Transform):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Transform.read(os.fspath(value))
    raise TypeError(f"transforms: expected a Transform or a file name, not {type(value).__name__}")


class RegistrationResult:
    """What :func:`register` returns: the moving image on the fixed grid (``warped``), the
    transforms (``affine``, and after a deformable stage ``warp`` and ``inverse_warp``, all on
    the fixed grid) and the two grids.

    ``forward_transforms`` bring the moving image onto the fixed grid and map fixed points to
    the moving space; ``inverse_transforms`` do the reverse. Both are lists in
    antsApplyTransforms' order, as ``ants.registration`` returns ``fwdtransforms`` and
    ``invtransforms``.
    """

    def __init__(self, native_result: Any, warped: Image, fixed: Image, moving: Image) -> None:
        self._native = native_result
        self.warped = warped
        self.fixed_grid = (fixed.shape, fixed.affine)
        self.moving_grid = (moving.shape, moving.affine)

    @property
    def affine(self) -> Transform:
        """Fixed world to moving world (RAS+ mm)."""
        return self._native.affine

    @property
    def warp(self) -> Transform | None:
        """The forward displacement field, after a deformable stage."""
        return self._native.warp

    @property
    def inverse_warp(self) -> Transform | None:
        """The inverse displacement field, after a deformable stage."""
        return self._native.inverse_warp

    @property
    def affine_metric_value(self) -> float | None:
        """Final cost of the affine stage (lower is better)."""
        return self._native.affine_metric_value

    @property
    def forward_transforms(self) -> list[Transform]:
        """``[warp, affine]`` (or ``[affine]``)."""
        return self._native.forward_transforms

    @property
    def inverse_transforms(self) -> list[Transform]:
        """``[affine inverse, inverse_warp]`` (or ``[affine inverse]``)."""
        return self._native.inverse_transforms

    def apply(self, moving: ImageLike, interpolation: str = "linear") -> Image:
        """An image on the moving grid brought onto the fixed grid."""
        shape, affine = self.fixed_grid
        return apply_transforms((np.zeros(shape, np.float32), affine), moving, self.forward_transforms, interpolation)

    def apply_inverse(self, fixed: ImageLike, interpolation: str = "linear") -> Image:
        """An image on the fixed grid brought onto the moving grid."""
        shape, affine = self.moving_grid
        return apply_transforms((np.zeros(shape, np.float32), affine), fixed, self.inverse_transforms, interpolation)

    def transform_points(self, points: Any, inverse: bool = False) -> np.ndarray:
        """Maps fixed-space points ``(n, 3)`` (RAS+ mm) to the moving space (``inverse``: moving
        to fixed)."""
        chain = self.inverse_transforms if inverse else self.forward_transforms
        return _map_points(chain, points)

    def jacobian(self, log: bool = False) -> Image:
        """The Jacobian determinant of the forward field (see :func:`jacobian`)."""
        if self.warp is None:
            raise _native.PedinormError("registration: no deformable stage ran, so there is no field")
        return jacobian(self.warp, log=log)

    def save(self, prefix: str, warped: bool = True) -> list[str]:
        """Writes the result as ``pedinorm register --output PREFIX`` does (a folder must end
        with ``/``): ``PREFIXaffine.txt`` (ITK text, LPS), ``PREFIXwarp.nii.gz`` and
        ``PREFIXinverse_warp.nii.gz`` (ANTs displacement fields) and, with ``warped``,
        ``PREFIXwarped.nii.gz``. Returns the paths written."""
        written = [os.fspath(p) for p in self._native.save(prefix)]
        if warped:
            path = f"{prefix}warped.nii.gz"
            self.warped.save(path, dtype="float32")
            written.append(path)
        return written

    def __repr__(self) -> str:
        return f"RegistrationResult({self._native!r}, warped={self.warped!r})"


def _map_points(chain: Sequence[Transform], points: Any) -> np.ndarray:
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    out = points
    for transform in chain:
        out = transform.transform_points(out)
    return out


def register(
    fixed: ImageLike,
    moving: ImageLike,
    preset: str = "default",
    *,
    metric: str | None = None,
    fixed_mask: ImageLike | None = None,
    moving_mask: ImageLike | None = None,
    threads: int | None = None,
) -> RegistrationResult:
    """Registers ``moving`` to ``fixed`` as ``pedinorm register`` does with the same settings
    (bit-identical results, at any thread count).

    ``preset`` is a key of :data:`PRESETS`; ``metric`` overrides the metric as ``--metric``
    does (``mi``, ``ncc``, ``meansquares`` for rigid/affine; ``squared-cc``, ``cc``, ``mi`` for
    the deformable stage). Masks (on their image's grid) restrict the metric. The GIL is
    released while it runs.
    """
    if preset not in PRESETS:
        raise _native.PedinormError(f"preset {preset!r}: must be one of {', '.join(PRESETS)}")
    fixed_image, moving_image = as_image(fixed, "fixed"), as_image(moving, "moving")
    masks = [None if m is None else native(m, name) for m, name in ((fixed_mask, "fixed_mask"), (moving_mask, "moving_mask"))]
    result, data, affine = _native.register(
        native(fixed_image, "fixed"),
        native(moving_image, "moving"),
        PRESETS[preset],
        metric,
        masks[0],
        masks[1],
        threads,
    )
    return RegistrationResult(result, Image(data, affine), fixed_image, moving_image)


def apply_transforms(
    fixed: ImageLike,
    moving: ImageLike,
    transforms: Sequence[TransformLike] | TransformLike,
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> Image:
    """``moving`` resampled on the grid of ``fixed`` through ``transforms`` (in
    antsApplyTransforms' order, as ``ants.apply_transforms`` takes them: a registration's
    ``forward_transforms``, or files such as ``["warp.nii.gz", "affine.txt"]``), as
    ``pedinorm apply`` does. ``interpolation``: ``linear``, ``nearest`` or ``label`` (nearest
    voxel, returned as the smallest integer type holding the labels)."""
    if isinstance(transforms, (Transform, str, os.PathLike)):
        transforms = [transforms]
    chain = [_as_transform(t) for t in transforms]
    fixed_image = as_image(fixed, "fixed")
    data, affine, dtype = _native.apply_transforms(
        list(fixed_image.shape), fixed_image.affine, native(moving, "moving"), chain, interpolation, default_value
    )
    return from_native((data, affine), dtype)


def jacobian(field: TransformLike | RegistrationResult, log: bool = False) -> Image:
    """The Jacobian determinant of a displacement field on its grid, as ``pedinorm jacobian``
    computes it (``log``: its natural logarithm, determinants below 1e-6 clamped first). Values
    above 1: the fixed-space neighbourhood maps to a larger moving-space volume."""
    if isinstance(field, RegistrationResult):
        return field.jacobian(log=log)
    data, affine, _folded = _native.jacobian(_as_transform(field), log)
    return Image(data, affine)
