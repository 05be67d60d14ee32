"""Quantize a model with calibration inputs drawn from images: the GUI's quantization job.

Reading the calibration images, drawing calibration inputs and running the quantizer are one
job here, so a panel can run it on a worker thread with one progress bar and one Cancel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from core.io import Image, read_image
from core.io.reader import IMAGE_SUFFIXES, suffix_of
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.logs import LOGGER_NAME
from core.models import LoadedModel, calibration_inputs
from core.models.calibration import calibration_shortfall
from core.quant import QuantConfig, QuantResult, quantize_loaded_model

__all__ = ["CALIBRATION_SUFFIXES", "images_in_folder", "quantize_from_images"]

# Folder calibration reads these; bare DICOM files without an extension are left out because a
# folder of them is one series, which the image-slices source already covers.
CALIBRATION_SUFFIXES = tuple(
    s for group in ("nifti", "itk", "natural") for s in IMAGE_SUFFIXES[group]
) + (".dcm",)


def images_in_folder(
    folder: str | Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[Image]:
    """Read every image file (NIfTI, NRRD/MHA, PNG/JPEG/TIFF/BMP, .dcm) directly in ``folder``.

    Raises
    ------
    ValueError
        The folder does not exist or holds no image file; an unreadable file raises
        :class:`core.io.ImageReadError` naming it.
    """
    source = Path(folder)
    if not source.is_dir():
        raise ValueError(f"{source}: calibration folder does not exist")
    files = sorted(
        p
        for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and suffix_of(p) in CALIBRATION_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"{source}: no image files for calibration "
            f"(looked for {', '.join(CALIBRATION_SUFFIXES)})"
        )
    images = []
    for index, path in enumerate(files):
        if cancel is not None:
            cancel.raise_if_cancelled()
        report(
            on_progress,
            Progress(index, len(files), f"reading {path.name}", stage="calibration"),
        )
        images.append(read_image(path))
    return images


def quantize_from_images(
    model: LoadedModel,
    source: Image | Sequence[Image] | str | Path,
    config: QuantConfig,
    *,
    n_samples: int = 32,
    crop: int | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> QuantResult:
    """Draw calibration inputs from ``source`` and quantize ``model``, as one job.

    Parameters
    ----------
    model : LoadedModel
        The float model.
    source : Image, sequence of Image, or path of a folder
        The open image (its slices or patches are sampled) or a folder of images.
    config : QuantConfig
    n_samples : int
        Calibration samples to draw (see :func:`core.models.calibration_inputs`).
    crop : int, optional
        Patch size of the samples (whole slices when None).
    on_progress, cancel
        See :mod:`core.jobs`.
    """
    if isinstance(source, str | Path):
        images: Image | list[Image] = images_in_folder(
            source, on_progress=on_progress, cancel=cancel
        )
    else:
        images = source if isinstance(source, Image) else list(source)
    report(on_progress, Progress(0, None, "drawing calibration inputs", stage="calibration"))
    calib = calibration_inputs(model, images, n=n_samples, seed=config.seed, crop=crop)
    shortfall = calibration_shortfall(model, int(calib.shape[0]), n_samples, crop)
    if shortfall:  # the Log panel says why the run learned from fewer samples than asked
        logging.getLogger(LOGGER_NAME).warning("%s", shortfall)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return quantize_loaded_model(model, calib, config, on_progress=on_progress, cancel=cancel)
