"""Per-image steps: ``preprocess`` (bias field, brain mask, intensity normalization) and
``segment`` (tissue classes)."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from . import _native
from ._image import Image, ImageLike, as_image, from_native, native

__all__ = ["Preprocessed", "Segmentation", "preprocess", "segment"]


class Preprocessed:
    """What :func:`preprocess` returns: the corrected and normalized ``image``, the brain
    ``mask`` (uint8), the multiplicative bias ``field`` (None when that step did not run),
    where the mask came from (``mask_source``: given, template, intensity or foreground) and
    the tissue ``peaks`` the normalization used (or None)."""

    def __init__(self, native_result: dict[str, Any]) -> None:
        self.image = from_native(native_result["image"])
        self.mask = from_native(native_result["mask"], "uint8")
        field = native_result["field"]
        self.field = None if field is None else from_native(field)
        self.mask_source: str = native_result["mask_source"]
        self.peaks: dict[str, Any] | None = native_result.get("peaks")

    def __repr__(self) -> str:
        return f"Preprocessed(image={self.image!r}, mask_source={self.mask_source!r})"


def preprocess(
    image: ImageLike,
    *,
    steps: str = "bias,mask,normalize",
    normalization: str = "auto",
    template: ImageLike | None = None,
    template_mask: ImageLike | None = None,
    mask: ImageLike | None = None,
    shrink_factor: int = 4,
    bias_iterations: str = "50x50x50x50",
    convergence: float = 0.001,
) -> Preprocessed:
    """Bias-field correction, brain mask and intensity normalization of one image, as
    ``pedinorm preprocess`` runs them with the same options (``steps``: comma-separated
    ``bias``, ``mask``, ``normalize`` or ``all``; ``normalization``: auto, wm-peak,
    tissue-peaks, nyul, histogram-match; a ``template`` with its ``template_mask`` propagates
    the mask and anchors template-based normalization; ``mask`` replaces the mask step)."""
    result = _native.preprocess(
        native(image, "image"),
        steps,
        normalization,
        None if template is None else native(template, "template"),
        None if template_mask is None else native(template_mask, "template_mask"),
        None if mask is None else native(mask, "mask"),
        shrink_factor,
        bias_iterations,
        convergence,
    )
    return Preprocessed(result)


class Segmentation:
    """What :func:`segment` returns: ``tissues`` (names in label order), ``probabilities``
    (name → probability map), ``labels`` (uint8: 0 outside the mask, else the tissue's 1-based
    index) and ``summary`` (what ``segmentation.json`` holds: per tissue volume in ml, mean,
    covariance, proportion; EM iterations and convergence)."""

    def __init__(self, native_result: dict[str, Any]) -> None:
        self.tissues: list[str] = list(native_result["tissues"])
        self.probabilities = {name: from_native(pair) for name, pair in native_result["probabilities"].items()}
        self.labels = from_native(native_result["labels"], "uint8")
        self.summary: dict[str, Any] = json.loads(native_result["summary"])

    @property
    def volumes(self) -> dict[str, float]:
        """Tissue volumes in ml (partial probabilities counted)."""
        return {t["name"]: t["volume_ml"] for t in self.summary["tissues"]}

    def __repr__(self) -> str:
        return f"Segmentation(tissues={self.tissues}, converged={self.summary['converged']})"


def _named(value: ImageLike, name: str) -> tuple[str, tuple[Any, Any]]:
    import os

    label = os.fspath(value) if isinstance(value, (str, os.PathLike)) else name
    return label, native(as_image(value, label), label)


def segment(
    images: ImageLike | Sequence[ImageLike],
    *,
    mask: ImageLike | None = None,
    priors: Mapping[str, ImageLike] | Sequence[ImageLike] | None = None,
    tissues: Sequence[str] | None = None,
    classes: int = 3,
    mrf: float | None = None,
    prior_weight: float | None = None,
    iterations: int | None = None,
) -> Segmentation:
    """Tissue segmentation of one subject, as ``pedinorm segment`` runs it: a Gaussian mixture
    over its ``images`` (one per contrast, one grid) fitted by EM with a Markov random field
    (weight ``mrf``) and optional ``priors`` (one probability map per tissue on the images'
    grid; a dict names the tissues). Without priors, ``classes`` classes are named by
    ``tissues`` in ascending order of the first image's intensity (adult T1: csf, gm, wm)."""
    if isinstance(images, (list, tuple)) and not (len(images) == 2 and _is_affine(images[1])):
        image_list = list(images)
    else:
        image_list = [images]
    named_images = [_named(image, f"images[{k}]") for k, image in enumerate(image_list)]
    if isinstance(priors, Mapping):
        named_priors = [(name, native(prior, name)) for name, prior in priors.items()]
    else:
        named_priors = [_named(prior, f"priors[{k}]") for k, prior in enumerate(priors or [])]
    named_mask = None if mask is None else _named(mask, "mask")
    result = _native.segment(
        named_images, named_mask, named_priors, list(tissues or []), classes, mrf, prior_weight, iterations
    )
    return Segmentation(result)


def _is_affine(value: Any) -> bool:
    return getattr(value, "shape", None) == (4, 4)
