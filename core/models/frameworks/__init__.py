"""Models trained elsewhere, opened in their own formats and run by their own frameworks.

:func:`detect_framework` says which framework a path belongs to; :func:`open_framework_model`
opens it as a :class:`~core.models.loaded.LoadedModel` whose ``framework`` attribute runs the
framework's inference (see :class:`~core.models.frameworks.base.FrameworkModel`):

* ``nnunetv2`` - an nnU-Net v2 trained model folder (:mod:`.nnunet`);
* ``monai-bundle`` - a MONAI bundle folder (:mod:`.monai_bundle`).

Either kind may also be a deploy folder (:mod:`core.deploy.framework_package`): the framework's
files with ONNX networks in place of the weights, run by ONNX Runtime inside the same pipeline.
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
    "DEPLOY_FILE",
    "DEPLOY_MEMBER_FILE",
    "QUANTIZATION_FILE",
    "FrameworkModel",
    "UntrustedCodeError",
    "detect_framework",
    "locate_framework_folder",
    "open_framework_model",
]

#: Written beside a quantized framework model: the quantization metadata of its spec.
QUANTIZATION_FILE = "segbench_quantization.json"
#: The manifest of a deploy folder (:mod:`core.deploy.framework_package`).
DEPLOY_FILE = "segbench_deploy.json"
#: Each member network's file in a deploy folder, in its member folder (``fold_K/``,
#: ``models/``; ``models/model.onnx`` is where MONAI's own ``onnx_export`` writes a bundle's).
DEPLOY_MEMBER_FILE = "model.onnx"
_KINDS = ("nnunetv2", "monai-bundle")


def _deployed_kind(path: Path) -> str | None:
    """The framework a deploy folder's manifest names; None when there is no usable one (a
    broken manifest is reported when the folder is opened)."""
    manifest = path / DEPLOY_FILE
    if not manifest.is_file():
        return None
    try:
        kind = json.loads(manifest.read_text(encoding="utf-8")).get("framework")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in _KINDS else None


def detect_framework(path: Path) -> str | None:
    """``"nnunetv2"`` or ``"monai-bundle"`` for those frameworks' folders, else None."""
    from core.models.frameworks.monai_bundle import is_monai_bundle
    from core.models.frameworks.nnunet import is_nnunet_folder

    if path.is_dir() and (path / DEPLOY_FILE).is_file():
        return _deployed_kind(path) or "deploy folder"
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


def _nnunet_spec(model: Any, folder: Path, runs_in: str = "") -> ModelSpec:
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
            f"fold(s) {', '.join(model.folds)} ({model.checkpoint}){runs_in}"
        ),
        quantization=_quantization_metadata(folder),
    )


def _monai_spec(model: Any, folder: Path, runs_in: str = "") -> ModelSpec:
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
            f"({facts['config']}, {facts['weights']}){runs_in}"
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
    if (path / DEPLOY_FILE).is_file():
        return _open_deployed(path, trust=trust, folds=folds, mirroring=mirroring)
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


def _open_deployed(
    path: Path, *, trust: bool, folds: Sequence[str | int] | None, mirroring: bool
) -> LoadedModel:
    """A deploy folder: the framework's pipeline with ONNX Runtime running its members."""
    from core.deploy.framework_package import read_deploy_manifest
    from core.deploy.onnx_runtime import OnnxRuntimeMembers, OnnxRuntimeNetwork

    manifest = read_deploy_manifest(path)
    kind, facts = manifest.get("framework"), manifest.get("facts") or {}
    members = manifest["members"]
    if kind == "nnunetv2" and folds is not None:
        wanted = [f"fold {fold}" for fold in folds]
        names = [member["name"] for member in members]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise ValueError(
                f"{path}: no {', '.join(missing)} in the deploy folder "
                f"(it holds {', '.join(names)})"
            )
        members = [members[names.index(name)] for name in wanted]
        facts = {**facts, "folds": [str(fold) for fold in folds]}
    networks = []
    for member in members:
        file = path / member["file"]
        networks.append(OnnxRuntimeNetwork(file.read_bytes(), str(file)))
    runs_in = ", ONNX networks in ONNX Runtime"
    if kind == "nnunetv2":
        from core.models.frameworks.nnunet import open_nnunet_deployed

        model = open_nnunet_deployed(path, facts, networks, trust=trust)
        model.use_mirroring = mirroring
        spec = _nnunet_spec(model, path, runs_in)
    elif kind == "monai-bundle":
        from core.models.frameworks.monai_bundle import open_monai_bundle

        if len(networks) != 1:
            raise ValueError(f"{path / DEPLOY_FILE}: a MONAI bundle has one network")
        model = open_monai_bundle(path, trust=trust, onnx_network=networks[0])
        spec = _monai_spec(model, path, runs_in)
    else:
        raise ValueError(f"{path / DEPLOY_FILE}: unknown framework {kind!r}")
    return LoadedModel(module=OnnxRuntimeMembers(networks), spec=spec, path=path, framework=model)
