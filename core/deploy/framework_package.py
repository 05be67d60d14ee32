"""A framework model (nnU-Net v2, MONAI bundle) as a deploy folder: the framework's own files
with one ONNX network per member in place of its torch weights.

One ONNX file cannot hold nnU-Net's or MONAI's pipeline (preprocessing, sliding window,
mirroring, fold ensemble, inversion), and re-implementing it outside the framework would give
different numbers. A deploy folder keeps the framework's description of the pipeline and swaps
only the networks::

    nnU-Net v2                          MONAI bundle
    plans.json                          configs/metadata.json, configs/inference.json ...
    dataset.json                        models/model.onnx
    fold_K/model.onnx (one per fold)
    segbench_deploy.json                segbench_deploy.json
    segbench_quantization.json          segbench_quantization.json (quantized variants)

``model.onnx`` is where MONAI's own ``onnx_export`` puts a bundle's network. Each ONNX network
is exported by :func:`core.deploy.onnx_export.build_member_onnx`: float, or with the
quantizer's integer codes and DequantizeLinear for a quantized variant. ``segbench_deploy.json``
(:data:`core.models.frameworks.DEPLOY_FILE`) names the framework, lists the member files with
their export summaries, and carries what nnU-Net's checkpoints said besides the weights
(trainer, configuration, mirroring axes). :func:`core.models.frameworks.open_framework_model`
opens the folder with the framework's pipeline and ONNX Runtime running the members.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from core.atomic_files import atomic_write_folder
from core.deploy.onnx_export import (
    DEFAULT_OPSET,
    ExportSummary,
    build_member_onnx,
    precision_label,
)
from core.models.frameworks import DEPLOY_FILE, DEPLOY_MEMBER_FILE, QUANTIZATION_FILE
from core.models.loaded import LoadedModel

__all__ = [
    "DEPLOY_FORMAT",
    "FrameworkExportSummary",
    "export_framework_onnx",
    "read_deploy_manifest",
]

DEPLOY_FORMAT = "segbench-deploy-v1"


@dataclass
class FrameworkExportSummary:
    """What a framework export wrote: the folder, and each member network's summary.

    Attributes
    ----------
    model : str
    precision : str
    opset : int
    folder : str
    members : list of ExportSummary
        One per member network, in the framework's member order, each with its file's size.
    files : list of str
        Each member's ONNX file, relative to ``folder``.
    """

    model: str
    precision: str
    opset: int
    folder: str
    members: list[ExportSummary] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        """All member networks together (the framework's JSON files are a few kB)."""
        return sum(member.bytes for member in self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "precision": self.precision,
            "opset": self.opset,
            "folder": self.folder,
            "bytes": self.bytes,
            "members": [
                {"file": file, **member.to_dict()}
                for file, member in zip(self.files, self.members, strict=True)
            ],
        }

    def lines(self) -> list[str]:
        """The summary as sentences: the folder, then each member's own summary."""
        lines = [
            f"{self.model}: {self.precision}, opset {self.opset}, {len(self.members)} member "
            f"network(s) in ONNX, {self.bytes / 1e6:.3f} MB in all"
        ]
        for file, member in zip(self.files, self.members, strict=True):
            first, *rest = member.lines()
            lines.append(f"{file}: {first}")
            lines += [f"  {line}" for line in rest]
        return lines


def _replaceable(folder: Path, model: LoadedModel) -> set[str]:
    """What an earlier deploy folder at ``folder`` may hold (replaced whole); anything else
    there is the user's, and the export refuses."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return set()
    if not (folder / DEPLOY_FILE).is_file():
        raise ValueError(
            f"{folder}: exists and is not a deploy folder written by segbench; refusing to "
            "replace it (choose a new folder)"
        )
    names = {path.name for path in folder.iterdir()}
    return {DEPLOY_FILE, QUANTIZATION_FILE, *model.framework.layout_names(names)}


def export_framework_onnx(
    model: LoadedModel,
    folder: str | Path,
    *,
    quant_result: Any = None,
    opset: int = DEFAULT_OPSET,
) -> FrameworkExportSummary:
    """Write ``model`` (a framework model or a quantized variant of one) as a deploy folder.

    The folder is built beside ``folder`` and swapped in whole, so a failure or a kill leaves
    no half-written folder. An earlier deploy folder there is replaced; any other existing,
    non-empty folder is refused.

    Parameters
    ----------
    model : LoadedModel
        A framework model (``model.framework`` set) on the torch backend.
    folder : str or Path
        The deploy folder to write.
    quant_result : core.quant.QuantResult, optional
        The run that made a quantized variant; without it the codes are read from the
        variant's member folders.
    opset : int

    Raises
    ------
    ValueError
        Not a framework model, an ONNX model, an existing folder that is not a deploy folder,
        a quantized variant without codes, or a member the exporter cannot trace.
    """
    folder = Path(folder)
    framework = model.framework
    if framework is None:
        raise ValueError(f"{model.name}: not a framework model; export it to one .onnx file")
    if model.backend != "torch":
        raise ValueError(f"{model.name}: is already ONNX networks (a deploy folder)")
    if folder.suffix.lower() == ".onnx":
        raise ValueError(f"{folder}: a framework model is exported to a folder, not an .onnx")
    replaceable = _replaceable(folder, model)
    built = build_member_onnx(model, quant_result=quant_result, opset=opset)
    files = [
        member.relative_to(folder) / DEPLOY_MEMBER_FILE
        for member in framework.member_folders(folder)
    ]
    manifest = {
        "format": DEPLOY_FORMAT,
        "framework": model.spec.architecture,
        "opset": opset,
        "members": [
            {"name": name, "file": file.as_posix()}
            for name, file in zip(framework.member_names(), files, strict=True)
        ],
        "facts": framework.deploy_facts(),
        "exported_from": str(model.path) if model.path is not None else model.name,
    }

    def write(temp: Path) -> None:
        framework.save_layout(temp)
        for (proto, _summary), file in zip(built, files, strict=True):
            (temp / file).parent.mkdir(parents=True, exist_ok=True)
            onnx.save_model(proto, str(temp / file))
        if model.spec.quantization is not None:
            (temp / QUANTIZATION_FILE).write_text(
                json.dumps(model.spec.quantization, indent=2), encoding="utf-8"
            )
        (temp / DEPLOY_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    atomic_write_folder(folder, write, replaceable=replaceable)
    summaries = []
    for (_proto, summary), file in zip(built, files, strict=True):
        summary.bytes = (folder / file).stat().st_size
        summaries.append(summary)
    return FrameworkExportSummary(
        model=model.name,
        precision=precision_label(model),
        opset=opset,
        folder=str(folder),
        members=summaries,
        files=[file.as_posix() for file in files],
    )


def read_deploy_manifest(folder: Path) -> dict[str, Any]:
    """``segbench_deploy.json`` of ``folder``, checked.

    Raises
    ------
    ValueError
        Unreadable, not this format, or member files missing or outside the folder (the
        manifest is named).
    """
    path = folder / DEPLOY_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable deploy manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DEPLOY_FORMAT:
        raise ValueError(f"{path}: not a segbench deploy manifest ({DEPLOY_FORMAT})")
    members = manifest.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError(f"{path}: lists no member networks")
    root = folder.resolve()
    for member in members:
        file = member.get("file") if isinstance(member, dict) else None
        if not isinstance(file, str) or not isinstance(member.get("name"), str):
            raise ValueError(f"{path}: a member entry without a name and a file")
        target = (folder / file).resolve()
        if not target.is_relative_to(root):
            raise ValueError(f"{path}: member file {file!r} lies outside the folder")
        if not target.is_file():
            raise ValueError(f"{path}: member file {file} is missing")
    if not isinstance(manifest.get("facts", {}), dict):
        raise ValueError(f"{path}: 'facts' is not an object")
    return manifest
