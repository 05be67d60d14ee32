"""Segmentation models: specs, built-in architectures, loading/saving and inference.

The public entry points are re-exported here; each lives in its own module:

* :mod:`core.models.spec` - :class:`ModelSpec`, the JSON description of a model;
* :mod:`core.models.architectures` - the architecture registry and the U-Net;
* :mod:`core.models.preprocessing` - named intensity transforms;
* :mod:`core.models.loading` - :func:`load_model`, :func:`save_model`,
  :func:`save_quantized_model`;
* :mod:`core.models.inference` - :func:`predict`;
* :mod:`core.models.calibration` - :func:`calibration_inputs`;
* :mod:`core.models.frameworks` - models other frameworks run (nnU-Net v2 folders);
* :mod:`core.models.trust` - :class:`UntrustedCodeError`, for files that would run code.
"""

from core.models.architectures import (
    UNet,
    build_architecture,
    known_architectures,
    register_architecture,
)
from core.models.calibration import calibration_inputs
from core.models.inference import predict
from core.models.inputs import model_input
from core.models.loaded import LoadedModel
from core.models.loading import load_model, quantized_variant, save_model, save_quantized_model
from core.models.preprocessing import apply_preprocessing, known_transforms, register_transform
from core.models.spec import ModelSpec
from core.models.trust import UntrustedCodeError

__all__ = [
    "LoadedModel",
    "ModelSpec",
    "UNet",
    "UntrustedCodeError",
    "apply_preprocessing",
    "build_architecture",
    "calibration_inputs",
    "known_architectures",
    "known_transforms",
    "load_model",
    "model_input",
    "predict",
    "quantized_variant",
    "register_architecture",
    "register_transform",
    "save_model",
    "save_quantized_model",
]
