"""``main.py info``: describe an image, a model or a folder of DICOM series."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.cli.arguments import add_model_options, model_options
from core.cli.errors import EXIT_OK, handle_errors
from core.cli.tables import format_table
from core.report_files import format_report_json

__all__ = ["HELP", "NAME", "add_arguments", "describe_path", "format_description", "run"]

NAME = "info"
HELP = "describe an image, a model or a DICOM folder"
DESCRIPTION = """\
Describe PATH without changing it:
  an image file (NIfTI, NRRD, MHA, PNG, one DICOM file): shape, voxel type, spacing,
    orientation, modality, display window, intensity range and reading warnings;
  a model (folder with model.json, .safetensors or .pt file, a bare model.json spec, an
    nnU-Net v2 model folder or a MONAI bundle): the spec, quantization metadata, every layer
    with its parameters, and the total;
  a folder of DICOM files: its series (number, modality, description, date, slices, slice
    size, UID).
Sizes are columns x rows x slices for every format (columns x rows for a picture)."""
EPILOG = """\
examples:
  main.py info resources/demo/image.nii.gz
  main.py info resources/demo/model --json

exit status: 0 done, 1 failed (message on stderr), 2 bad arguments"""

#: How many numbers a size has -> what they are (see core.io.Image.size).
_SIZE_ORDERS = {2: "columns x rows", 3: "columns x rows x slices"}

_MODEL_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ts", ".torchscript", ".jit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``info`` options to its sub-parser."""
    parser.add_argument("path", metavar="PATH", help="image file, model, or DICOM folder")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    add_model_options(parser)


def describe_path(path: Path, **load_options: Any) -> dict[str, Any]:
    """Describe what ``path`` is.

    Parameters
    ----------
    path : pathlib.Path
    **load_options
        Passed to :func:`core.models.load_model` for a model (``trust``, ``folds``, ...).

    Returns
    -------
    dict
        ``{"kind": "image" | "model" | "spec" | "dicom-folder", ...}`` with the fields of
        :mod:`core.cli.describe`.

    Raises
    ------
    ValueError
        A missing path, an unreadable file, or a folder that is neither a model nor DICOM.
    """
    from core.cli.describe import describe_image, describe_model, describe_series, describe_spec

    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    from core.models.frameworks import detect_framework

    is_framework_model = path.is_dir() and detect_framework(path) is not None
    if path.is_dir() and not (path / "model.json").exists() and not is_framework_model:
        from core.io import list_dicom_series
        from core.io.errors import NO_DICOM_IMAGES

        series = list_dicom_series(path)
        if not series:
            raise ValueError(f"{path}: {NO_DICOM_IMAGES}, and not a model folder (no model.json)")
        return {
            "kind": "dicom-folder",
            "path": str(path),
            "series": [describe_series(s) for s in series],
        }
    if path.is_dir() or path.suffix.lower() in _MODEL_FILE_SUFFIXES:
        from core.cli.model_loading import load_cli_model

        return {"kind": "model", **describe_model(load_cli_model(path, **load_options))}
    if path.suffix.lower() == ".json":
        from core.models import ModelSpec

        return {"kind": "spec", "path": str(path), "spec": describe_spec(ModelSpec.read(path))}
    from core.io import VolumeChoiceRequired, read_image

    try:
        return {"kind": "image", **describe_image(read_image(path), intensities=True)}
    except VolumeChoiceRequired as several:
        # Describe the first volume (they share the geometry) and say how many there are.
        first = describe_image(read_image(path, volume=0), intensities=True)
        volumes = {"count": several.count, "summary": several.summary, "detail": several.detail}
        return {"kind": "image", **first, "volumes": volumes}


def _join(values: Any, unit: str = "") -> str:
    text = " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return f"{text} {unit}".rstrip()


def _format_spec(spec: dict[str, Any]) -> list[str]:
    lines = [
        f"  architecture: {spec['architecture']} {spec.get('arguments') or ''}".rstrip(),
        f"  mode: {spec['mode']}, input channels: {spec['in_channels']}, "
        f"activation: {spec['activation']}, patch size: {spec.get('patch_size') or 'whole'}",
        f"  classes: {', '.join(spec['class_names'])}",
    ]
    steps = [
        step["name"] + "(" + ", ".join(f"{k}={v}" for k, v in step.items() if k != "name") + ")"
        for step in spec.get("preprocessing") or []
    ]
    lines.append(f"  preprocessing: {', '.join(steps) or 'none'}")
    if spec.get("description"):
        lines.append(f"  description: {spec['description']}")
    return lines


def _format_framework(facts: dict[str, Any]) -> list[str]:
    """Framework lines of a model: what runs it, and with which settings."""
    lines = [f"  framework: {facts['framework']}"]
    # nnU-Net states sizes in its own (z, y, x) order; a MONAI bundle in the order of its
    # preprocessed array (the inferer's roi_size, the Spacingd pixdim).
    nnunet = facts["framework"] == "nnU-Net v2"
    labels = {
        "bundle": "bundle",
        "version": "version",
        "config": "config",
        "weights": "weights",
        "network": "network",
        "configuration": "configuration",
        "trainer": "trainer",
        "plans": "plans",
        "folds": "folds",
        "checkpoint": "checkpoint",
        "channel_names": "input channels",
        "normalization": "normalization",
        "activation": "activation",
        "patch_size": "patch size (z, y, x)" if nnunet else "patch size (inferer roi_size)",
        "spacing_mm": "target spacing (z, y, x mm)" if nnunet else "target spacing (Spacingd mm)",
        "region_based": "region-based",
        "mirroring": "mirroring axes",
        "tile_step_size": "tile step",
    }
    for key, label in labels.items():
        if key not in facts:
            continue
        value = facts[key]
        if key in ("patch_size", "spacing_mm") and value:
            value = _join(value)
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append(f"    {label}: {value if value not in ('', [], None) else 'none'}")
    return lines


def format_description(info: dict[str, Any]) -> str:
    """The human-readable text of :func:`describe_path`'s result."""
    kind = info["kind"]
    if kind == "image":
        lines = [
            f"image: {info['path']}",
            f"  size: {_join(info['size'])} {'pixels' if info['natural'] else 'voxels'} "
            f"({_SIZE_ORDERS[len(info['size'])]}), {info['dtype']}"
            + (", RGB" if info["rgb"] else ""),
            f"  spacing: {_join(info['spacing_mm'], 'mm')}",
            f"  orientation: {info['orientation']}",
            f"  modality: {info['modality'] or 'unknown'}"
            + (" (natural image)" if info["natural"] else ""),
        ]
        if info.get("volumes"):
            volumes = info["volumes"]
            how = f"; {volumes['detail']}" if volumes["detail"] else ""
            lines.append(
                f"  volumes: {volumes['count']} ({volumes['summary']}{how}); shown: volume 0, "
                f"segment one with --volume N"
            )
        if info["window"]:
            lines.append(f"  window: center {info['window'][0]:g}, width {info['window'][1]:g}")
        if info.get("intensity_range"):
            low, high = info["intensity_range"]
            lines.append(f"  intensity range: {low:g} to {high:g}")
        lines.append("  warnings: " + ("none" if not info["warnings"] else ""))
        lines += [f"    - {w}" for w in info["warnings"]]
        return "\n".join(lines)
    if kind == "spec":
        return "\n".join([f"model spec: {info['path']}", *_format_spec(info["spec"])])
    if kind == "model":
        lines = [f"model: {info['name']} ({info['path']})", *_format_spec(info["spec"])]
        if info.get("framework"):
            # The framework preprocesses itself; the spec's (empty) list would say "none".
            lines = [line for line in lines if not line.startswith("  preprocessing:")]
            lines += _format_framework(info["framework"])
        if info["quantization"]:
            q = info["quantization"]
            lines.append(
                "  quantization: "
                + ", ".join(
                    f"{k}={q[k]}" for k in ("method", "weight_bits", "base_model") if k in q
                )
            )
        lines.append(
            f"  parameters: {info['parameters']:,} ({info['parameter_mb']:.2f} MB as float32)"
        )
        lines.append(f"  layers ({len(info['layers'])} with parameters):")
        table = format_table(
            [{**row, "shape": _join(row["weight_shape"] or [])} for row in info["layers"]],
            [
                ("name", "name", ""),
                ("type", "type", ""),
                ("shape", "weight shape", ""),
                ("parameters", "parameters", ",d"),
            ],
        )
        lines += ["    " + line for line in table.splitlines()]
        return "\n".join(lines)
    lines = [f"DICOM folder: {info['path']} ({len(info['series'])} series)"]
    table = format_table(
        [{**s, "size": f"{s['columns']} x {s['rows']}"} for s in info["series"]],
        [
            ("number", "number", ""),
            ("modality", "modality", ""),
            ("description", "description", ""),
            ("date", "date", ""),
            ("slices", "slices", "d"),
            ("volumes", "volumes", "d"),
            ("size", "columns x rows", ""),
            ("uid", "series UID", ""),
        ],
    )
    lines += ["  " + line for line in table.splitlines()]
    return "\n".join(lines)


@handle_errors(NAME)
def run(args: argparse.Namespace) -> int:
    """Run ``info``; returns the exit code."""
    info = describe_path(Path(args.path), **model_options(args))
    print(
        format_report_json(info) if args.json else format_description(info),
        end="" if args.json else "\n",
    )
    return EXIT_OK
