"""pedinorm from Python: paediatric brain-MR normative templates and calibrated deviation
maps, over the same compute and file formats as the ``pedinorm`` command line.

Images are numpy arrays with a 4x4 voxel-to-world RAS+ affine (:class:`Image`), converted
to and from ``nibabel.Nifti1Image``; every function also takes nibabel images, ``(data,
affine)`` pairs and NIfTI file paths. Compute runs with the GIL released. Errors are
:class:`PedinormError` (a ``ValueError``) naming the file or argument, the field and the rule.
"""

from ._native import PedinormError, Transform, __version__
from ._image import Image, as_image
from ._register import PRESETS, RegistrationResult, apply_transforms, jacobian, register
from ._steps import Preprocessed, Segmentation, preprocess, segment
from ._normdb import Deviation, NormDb, Volumes, deviation, volumes

__all__ = [
    "PedinormError",
    "Image",
    "as_image",
    "Transform",
    "PRESETS",
    "RegistrationResult",
    "register",
    "apply_transforms",
    "jacobian",
    "Preprocessed",
    "preprocess",
    "Segmentation",
    "segment",
    "NormDb",
    "Deviation",
    "deviation",
    "Volumes",
    "volumes",
    "__version__",
]
