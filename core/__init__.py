"""Segmentation workbench core: images, models, quantization and decisions, with no Qt.

Everything under ``core`` is plain Python on top of torch, numpy, nibabel and SimpleITK, so a
script or a cluster job can use it without a display. The GUI in ``gui`` is a thin layer over it.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
