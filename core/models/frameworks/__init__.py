"""Models trained elsewhere, opened in their own formats and run by their own frameworks.

:func:`detect_framework` says which framework a path belongs to; :func:`open_framework_model`
opens it as a :class:`~core.models.loaded.LoadedModel` whose ``framework`` attribute runs the
framework's inference (see :class:`~core.models.frameworks.base.FrameworkModel`):

* ``nnunetv2`` - an nnU-Net v2 trained model folder (:mod:`.nnunet`);
* ``monai-bundle`` - a MONAI bundle folder (:mod:`.monai_bundle`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.models.frameworks.base import FrameworkModel
from core.models.loaded import LoadedModel
from core.models.spec import ModelSpec
from core.models.trust import UntrustedCodeError

__all__ = [
    "QUANTIZATION_FILE",
    "FrameworkModel",
    "UntrustedCodeError",
    "detect_framework",
    "locate_framework_folder",
    "open_framework_model",
]

#: Written beside a quantized framework model: the quantization metadata of its spec.
QUANTIZATION_FILE = "segbench_quantization.json"


def detect_framework(path: Path) -> str | None:
    """``"nnunetv2"`` or ``"monai-bundle"`` for those frameworks' folders, else None."""
    from core.models.frameworks.monai_bundle import is_monai_bundle
    from core.models.frameworks.nnunet import is_nnunet_folder

    if is_nnunet_folder(path):
        return "nnunetv2"
    if is_monai_bundle(path):
        return "monai-bundle"
    return None


def locate_framework_folder(path: Path) -> tuple[Path, list[str] | None] | None:
    """The framework model folder a path names or lies in, and the fold a checkpoint names.

    A file dialog hands over a file: ``plans.json`` or ``dataset.json`` of an nnU-Net folder
    opens the folder; ``fold_K/checkpoint_*.pth`` opens the folder with fold K alone; any file
    in a MONAI bundle's ``configs/`` or ``models/`` opens the bundle. Returns None when no
    framework claims the path.
    """
    if path.is_dir():
        return (path, None) if detect_framework(path) else None
    if path.name in ("plans.json", "dataset.json") and detect_framework(path.parent):
        return path.parent, None
    bundle = path.parent.parent
    if path.parent.name in ("configs", "models") and detect_framework(bundle) == "monai-bundle":
        return bundle, None
    fold_folder = path.parent
    if (
        path.suffix == ".pth"
        and fold_folder.name.startswith("fold_")
        and detect_framework(fold_folder.parent)
    ):
        return fold_folder.parent, [fold_folder.name[len("fold_") :]]
    return None


def _quantization_metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / QUANTIZATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not readable quantization metadata ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _nnunet_spec(model: Any, folder: Path) -> ModelSpec:
    facts = model.describe()
    dataset = model.dataset_json.get("name") or folder.parent.name
    return ModelSpec(
        architecture="nnunetv2",
        class_names=tuple(model.class_names()),
        in_channels=model.input_channels,
        activation="sigmoid" if model.has_regions else "softmax",
        mode="2d" if model.configuration == "2d" else "3d",
        patch_size=tuple(model.patch_size),
        name=f"{dataset} {model.configuration}",
        description=(
            f"nnU-Net v2 {facts['trainer']} / {facts['plans']} / {model.configuration}, "
            f"fold(s) {', '.join(model.folds)} ({model.checkpoint})"
        ),
        quantization=_quantization_metadata(folder),
    )


def _monai_spec(model: Any, folder: Path) -> ModelSpec:
    facts = model.describe()
    version = f" {model.version}" if model.version else ""
    return ModelSpec(
        architecture="monai-bundle",
        class_names=tuple(model.class_names()),
        in_channels=model.input_channels,
        activation=model.activation,
        mode="2d" if model.spatial_dims == 2 else "3d",
        patch_size=model.patch_size,
        name=model.name,
        description=(
            f"MONAI bundle {model.name}{version}: {facts['network']} "
            f"({facts['config']}, {facts['weights']})"
        ),
        quantization=_quantization_metadata(folder),
    )


def open_framework_model(
    path: Path,
    *,
    trust: bool = False,
    folds: Sequence[str | int] | None = None,
    checkpoint: str | None = None,
    mirroring: bool = True,
) -> LoadedModel:
    """Open the framework model folder ``path`` with its framework.

    Parameters
    ----------
    path : pathlib.Path
        A model folder in a framework's layout.
    trust : bool
        Allow files or configs that run code (pickled objects, classes outside the framework,
        MONAI config expressions).
    folds, checkpoint
        nnU-Net: the folds to ensemble (all when omitted) and the checkpoint file name.
    mirroring : bool
        nnU-Net: test-time mirroring (on by default, as in nnU-Net).

    Raises
    ------
    ValueError
        Broken or incomplete folders, naming the file.
    UntrustedCodeError
        Opening would run code and ``trust`` is False.
    """
    kind = detect_framework(path)
    if kind == "nnunetv2":
        from core.models.frameworks.nnunet import open_nnunet_folder

        model = open_nnunet_folder(path, trust=trust, folds=folds, checkpoint=checkpoint)
        model.use_mirroring = mirroring
        return LoadedModel(
            module=model.network, spec=_nnunet_spec(model, path), path=path, framework=model
        )
    if kind == "monai-bundle":
        from core.models.frameworks.monai_bundle import open_monai_bundle

        bundle = open_monai_bundle(path, trust=trust)
        return LoadedModel(
            module=bundle.network, spec=_monai_spec(bundle, path), path=path, framework=bundle
        )
    raise ValueError(f"{path}: not a model folder of a known framework")
