"""Plain-dictionary descriptions of images, models and DICOM series for reports and ``info``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the CLI imports these lazily so `main.py --help` stays fast
    from core.io import DicomSeries, Image
    from core.models import LoadedModel, ModelSpec

__all__ = [
    "describe_image",
    "describe_layers",
    "describe_model",
    "describe_series",
    "describe_spec",
]


def describe_image(image: Image, *, intensities: bool = False) -> dict[str, Any]:
    """Geometry and metadata of an image.

    Parameters
    ----------
    image : core.io.Image
    intensities : bool
        Also give the voxel value range (reads the whole array once).

    Returns
    -------
    dict
        path, shape (the array's, channel axis included), size (columns x rows x slices, the
        order every format is described in; columns x rows for a single picture), dtype,
        spacing_mm, orientation,
        modality, natural, rgb, window, rescale, affine (4 rows), warnings; plus
        ``intensity_range`` when asked.
    """
    info: dict[str, Any] = {
        "path": str(image.path) if image.path is not None else None,
        "shape": list(image.array.shape),
        "size": list(image.size),
        "size_order": "columns x rows x slices",
        "dtype": str(image.array.dtype),
        "spacing_mm": list(image.spacing),
        "orientation": image.orientation,
        "modality": image.modality,
        "natural": image.is_natural,
        "rgb": image.is_rgb,
        "window": list(image.window) if image.window is not None else None,
        "rescale": list(image.rescale) if image.rescale is not None else None,
        "affine": [list(row) for row in np.asarray(image.affine, dtype=float)],
        "warnings": list(image.warnings),
    }
    if intensities:
        values = image.array
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        info["intensity_range"] = (
            [finite.min().item(), finite.max().item()] if finite.size else None
        )
    return info


def describe_spec(spec: ModelSpec) -> dict[str, Any]:
    """The model spec as its JSON dictionary (what ``model.json`` holds)."""
    return spec.to_dict()


def describe_layers(module: Any) -> list[dict[str, Any]]:
    """One record per leaf module that owns parameters, in registration order.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    list of dict
        name, type, weight_shape (None without a ``weight``), parameters (own parameters only).
    """
    rows = []
    for name, child in module.named_modules():
        own = list(child.parameters(recurse=False))
        if not own or list(child.children()):
            continue
        weight = getattr(child, "weight", None)
        rows.append(
            {
                "name": name or "(root)",
                "type": type(child).__name__,
                "weight_shape": list(weight.shape) if weight is not None else None,
                "parameters": int(sum(p.numel() for p in own)),
            }
        )
    return rows


def describe_model(model: LoadedModel) -> dict[str, Any]:
    """Name, spec, layers and parameter counts of a loaded model.

    Parameters
    ----------
    model : core.models.LoadedModel

    Returns
    -------
    dict
        path, name, quantized, quantization (metadata or None), parameters (total),
        parameter_mb (float32 size), spec (the JSON spec), framework (the framework's facts, e.g.
        nnU-Net configuration and folds, or None), layers (:func:`describe_layers`).
    """
    total = int(sum(p.numel() for p in model.module.parameters()))
    return {
        "path": str(model.path) if model.path is not None else None,
        "name": model.name,
        "quantized": model.is_quantized,
        "quantization": model.spec.quantization,
        "parameters": total,
        "parameter_mb": total * 4 / 1e6,
        "spec": describe_spec(model.spec),
        "framework": model.framework.describe() if model.framework is not None else None,
        "layers": describe_layers(model.module),
    }


def describe_series(series: DicomSeries) -> dict[str, Any]:
    """One DICOM series of a folder: uid, number, description, modality, date, slices,
    volumes, slice size."""
    return {
        "uid": series.uid,
        "number": series.number,
        "date": series.date,
        "description": series.description,
        "modality": series.modality,
        "slices": series.n_slices,
        "volumes": series.volumes,
        "rows": series.rows,
        "columns": series.columns,
    }
