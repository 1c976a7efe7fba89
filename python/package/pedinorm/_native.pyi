"""Type stubs of the extension module ``pedinorm._native`` (images cross as ``(data, affine)``:
float32 data of shape ``(x, y, z)`` and a 4x4 float64 voxel-to-world RAS+ affine)."""

from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Pair = tuple[F32, F64]

class PedinormError(ValueError):
    """An input pedinorm refuses or a step that failed; the message names the file (or
    argument), the field and the rule."""

def read_image(path: str | PathLike[str]) -> Pair: ...
def write_image(path: str | PathLike[str], data: F32, affine: F64, dtype: str = "float32") -> None: ...

class Transform:
    """An affine or a displacement field mapping fixed-space world points (RAS+ mm) to the
    moving space."""

    @staticmethod
    def read(spec: str) -> Transform: ...
    @staticmethod
    def from_matrix(matrix: F64) -> Transform: ...
    @staticmethod
    def from_field(data: npt.NDArray[np.float32], affine: F64) -> Transform: ...
    @property
    def kind(self) -> str: ...
    @property
    def matrix(self) -> F64: ...
    @property
    def field_data(self) -> tuple[npt.NDArray[np.float32], F64]: ...
    def inverse(self) -> Transform: ...
    def transform_points(self, points: F64) -> F64: ...
    def write(self, path: str | PathLike[str]) -> None: ...

class Registration:
    affine: Transform
    warp: Transform | None
    inverse_warp: Transform | None
    affine_metric_value: float | None
    @property
    def forward_transforms(self) -> list[Transform]: ...
    @property
    def inverse_transforms(self) -> list[Transform]: ...
    def save(self, prefix: str) -> list[str]: ...

def register(
    fixed: Pair,
    moving: Pair,
    transform: str = "syn",
    metric: str | None = None,
    fixed_mask: Pair | None = None,
    moving_mask: Pair | None = None,
    threads: int | None = None,
) -> tuple[Registration, F32, F64]: ...
def apply_transforms(
    fixed_shape: list[int],
    fixed_affine: F64,
    moving: Pair,
    transforms: list[Transform],
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> tuple[F32, F64, str]: ...
def jacobian(transform: Transform, log: bool = False) -> tuple[F32, F64, int]: ...
def preprocess(
    image: Pair,
    steps: str = "bias,mask,normalize",
    normalization: str = "auto",
    template: Pair | None = None,
    template_mask: Pair | None = None,
    mask: Pair | None = None,
    shrink_factor: int = 4,
    bias_iterations: str = "50x50x50x50",
    convergence: float = 0.001,
) -> dict[str, Any]: ...
def segment(
    images: list[tuple[str, Pair]],
    mask: tuple[str, Pair] | None = None,
    priors: list[tuple[str, Pair]] = ...,
    tissues: list[str] = ...,
    classes: int = 3,
    mrf: float | None = None,
    prior_weight: float | None = None,
    iterations: int | None = None,
) -> dict[str, Any]: ...

class NormDb:
    path: str
    @staticmethod
    def open(path: str | PathLike[str]) -> NormDb: ...
    @property
    def brackets(self) -> list[dict[str, Any]]: ...
    def bracket_for_age(self, age: float) -> str: ...
    def template(self, bracket: str) -> Pair: ...
    def mask(self, bracket: str) -> Pair: ...
    def labels(self, bracket: str) -> Pair | None: ...
    def priors(self, bracket: str) -> dict[str, Pair] | None: ...
    @property
    def atlas(self) -> dict[str, Any] | None: ...
    def model(self, age: float, sex: str | None = None, channel: str = "intensity") -> dict[str, Any]: ...
    @property
    def calibration_json(self) -> str | None: ...
    @property
    def subjects_json(self) -> str: ...
    def deviation(
        self,
        case: Pair,
        age: float,
        sex: str | None = None,
        site: str | None = None,
        max_regions: int = 15,
        case_name: str = "case",
    ) -> dict[str, Any]: ...
    def volumes(
        self,
        image: Pair,
        age: float,
        sex: str | None = None,
        site: str | None = None,
        subject: str = "subject",
    ) -> dict[str, Any]: ...
