"""Reading and writing model folders: ``model.json`` beside the weights.

Layouts :func:`load_model` understands:

* a folder with ``model.json`` and ``model.safetensors`` (a registered architecture);
* a folder with ``model.json`` and ``model.pt`` (TorchScript, a state dict, or - only with
  ``trust=True`` - a pickled full module);
* a folder with ``model.json`` carrying ``"quantization"`` metadata, ``model.safetensors`` (the
  float base weights) and ``quantized.safetensors`` (written by :func:`core.quant.save_quantized`);
* a single ``name.safetensors`` or ``name.pt`` file with ``name.json`` beside it; a TorchScript
  file may instead carry its spec inside the archive as the extra file ``model.json``;
* a ``name.onnx`` file written by ``main.py export`` (spec in its metadata), run by ONNX Runtime
  (see :mod:`core.deploy.onnx_runtime`).

Why pickled modules are refused by default: ``torch.load(..., weights_only=False)`` unpickles
arbitrary Python objects, which can run any code the file's author chose.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from core.atomic_files import atomic_write, atomic_write_folder
from core.memory import MemoryLimitError, require_memory
from core.models.architectures import build_architecture, known_architectures
from core.models.loaded import LoadedModel, display_name
from core.models.spec import ModelSpec
from core.models.trust import UntrustedCodeError

__all__ = [
    "QUANTIZED_WEIGHTS_FILE",
    "SPEC_FILE",
    "TORCH_SUFFIXES",
    "WEIGHTS_FILE",
    "load_model",
    "save_model",
    "quantized_variant",
    "save_quantized_model",
]

SPEC_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
QUANTIZED_WEIGHTS_FILE = "quantized.safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
#: Files a save may replace in an existing model folder (anything else there is the user's).
MODEL_FILES = frozenset(
    {SPEC_FILE, WEIGHTS_FILE, QUANTIZED_WEIGHTS_FILE, *(f"model{s}" for s in TORCH_SUFFIXES)}
)


def _build(spec: ModelSpec, source: Path) -> nn.Module:
    if spec.architecture not in known_architectures():
        raise ValueError(
            f"{source}: architecture {spec.architecture!r} needs its code in the weights file "
            f"(TorchScript); safetensors weights need one of: {', '.join(known_architectures())}"
        )

    def build() -> nn.Module:
        return build_architecture(
            spec.architecture,
            in_channels=spec.in_channels,
            out_channels=spec.num_classes,
            arguments=spec.arguments,
        )

    try:
        # On the meta device first: sizes only, so a spec asking for a billion input
        # channels is measured, not allocated.
        with torch.device("meta"):
            probe = build()
        tensors = [*probe.parameters(), *probe.buffers()]
        need = sum(t.numel() * t.element_size() for t in tensors)
        # The weights, the file's copy of them, and room for the activations of a forward pass.
        require_memory(
            3 * need,
            f"{source}: building {spec.architecture!r} with "
            f"{sum(t.numel() for t in tensors):,} weights",
        )
        return build()
    except ValueError as error:
        if isinstance(error, MemoryLimitError):
            raise
        raise ValueError(f"{source}: {error}") from None


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict strictly; a mismatch names the file and the differing keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: the weights do not match the architecture in the spec "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(tensor.shape)} but the architecture "
                f"in the spec needs {tuple(expected[key].shape)}"
            )
        if tensor.dtype.is_floating_point != expected[key].dtype.is_floating_point:
            # load_state_dict would cast int32 codes into float weights without a word.
            raise ValueError(
                f"{source}: weight {key!r} is {tensor.dtype} but the architecture needs "
                f"{expected[key].dtype}"
            )
    module.load_state_dict(state)


def _check_quantized_finite(result: Any, source: Path | str) -> None:
    """Refuse a quantization run with NaN/Inf losses or weights (NaN calibration or weights)."""
    losses = getattr(result, "block_losses", None) or {}
    bad = [name for name, pair in losses.items() if not all(math.isfinite(v) for v in pair)]
    if bad:
        raise ValueError(
            f"{source}: quantization gave NaN or infinite losses in block(s) {', '.join(bad)}; "
            "nothing was kept (check the calibration images and the model's weights)"
        )
    _check_finite(result.model, source)


def _check_finite(module: nn.Module, source: Path | str) -> None:
    """Refuse NaN or infinite weights: every output of such a network is meaningless."""
    for key, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{source}: weight {key!r} holds {bad} NaN or infinite values")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None


def _load_registered(spec: ModelSpec, weights: Path) -> nn.Module:
    module = _build(spec, weights)
    _load_state(module, _read_safetensors(weights), weights)
    return module


def _load_torch_file(
    path: Path, spec: ModelSpec | None, trust: bool
) -> tuple[nn.Module, ModelSpec]:
    """Load a ``.pt``-style file: TorchScript, a state dict, or a (trusted) pickled module."""
    extra = {SPEC_FILE: ""}
    try:
        with warnings.catch_warnings():
            # torch marks TorchScript deprecated; it is still the format users export.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError:
        module = None
    if module is not None:
        if spec is None:
            embedded = extra.get(SPEC_FILE) or b""
            if not embedded:
                raise ValueError(
                    f"{path}: TorchScript file without a spec: put {path.stem}.json beside it "
                    f"or save it with the extra file {SPEC_FILE!r}"
                )
            text = embedded.decode("utf-8") if isinstance(embedded, bytes) else embedded
            spec = ModelSpec.from_json(text, source=f"{path} (embedded {SPEC_FILE})")
        return module, spec
    if spec is None:
        raise ValueError(f"{path}: no model spec found: put {path.stem}.json beside it")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "unsupported global" not in str(error).lower():
            # Not Python objects the safe loader refused, but bytes it cannot parse at all
            # (random data, another format): calling it a pickled module would mislead.
            raise ValueError(
                f"{path}: not a PyTorch file (neither TorchScript, a checkpoint nor a pickle)"
            ) from None
        if not trust:
            raise UntrustedCodeError(
                f"{path.name} is a pickled Python module: loading it runs code from the file; "
                "pass trust=True only if you trust where the file came from"
            ) from None
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises any type on random or cut bytes
        raise ValueError(
            f"{path}: not a readable PyTorch file ({_first_sentence(error)})"
        ) from None
    if isinstance(obj, nn.Module):
        return obj, spec
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        module = _build(spec, path)
        _load_state(module, obj, path)
        return module, spec
    raise ValueError(
        f"{path}: holds a {type(obj).__name__}, neither a module, TorchScript nor a state dict"
    )


def _first_sentence(error: BaseException) -> str:
    """The first sentence of a library's message (torch appends paragraphs of advice)."""
    text = " ".join(str(error).split())
    if not text:
        return "the file is empty" if isinstance(error, EOFError) else type(error).__name__
    return text.split(". ")[0].rstrip(".")[:200]


def _load_quantized(folder: Path, spec: ModelSpec) -> nn.Module:
    """Build the float base network and let core.quant put its quantized layers in."""
    from core import quant  # lazy: quantization is optional for plain inference

    base_weights = folder / WEIGHTS_FILE
    base = _build(spec, folder / SPEC_FILE)
    if base_weights.exists():
        _load_state(base, _read_safetensors(base_weights), base_weights)
    quantized = folder / QUANTIZED_WEIGHTS_FILE
    if not quantized.exists():
        raise ValueError(f"{folder}: quantized model without {QUANTIZED_WEIGHTS_FILE}")
    return quant.load_quantized(quantized, base)


def load_model(
    path: str | Path,
    *,
    trust: bool = False,
    folds: Sequence[str | int] | None = None,
    checkpoint: str | None = None,
    mirroring: bool = True,
) -> LoadedModel:
    """Load a model folder or file for inference.

    Parameters
    ----------
    path : str or Path
        A model folder, a ``.safetensors`` / ``.pt`` file (see the module docstring), or a
        framework's model folder (an nnU-Net v2 trained model folder or a MONAI bundle; see
        :mod:`core.models.frameworks`).
    trust : bool
        Allow unpickling a full Python module, which runs code from the file, and framework
        files or configs that run code. Only for files from a trusted source; the GUI asks the
        user first.
    folds, checkpoint, mirroring
        nnU-Net options: the folds to ensemble (all present when omitted), the checkpoint file
        (``checkpoint_final.pth`` or ``checkpoint_best.pth``) and test-time mirroring.

    Returns
    -------
    LoadedModel
        Module in eval mode on the CPU.

    Raises
    ------
    ValueError
        Missing or unreadable files, an invalid spec (naming the field), weights that do not fit
        the architecture, or a pickled module without ``trust=True``.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such model file or folder")
    if path.suffix.lower() == ".onnx" and path.is_file():
        from core.deploy.onnx_runtime import open_onnx_model  # lazy: onnxruntime is heavy

        return open_onnx_model(path)
    if not (path.is_dir() and (path / SPEC_FILE).exists()):
        # lazy: the frameworks are heavy imports
        from core.models.frameworks import locate_framework_folder, open_framework_model

        located = locate_framework_folder(path)
        if located is not None:
            folder, named_fold = located
            if named_fold is not None and folds is None:
                folds = named_fold
                checkpoint = checkpoint or path.name
            return open_framework_model(
                folder, trust=trust, folds=folds, checkpoint=checkpoint, mirroring=mirroring
            )
    if path.is_dir():
        spec_path = path / SPEC_FILE
        if not spec_path.exists():
            raise ValueError(
                f"{path}: not a model folder (no {SPEC_FILE} inside, not an nnU-Net v2 trained "
                "model folder with plans.json, dataset.json and fold_K/, nor a MONAI bundle with "
                "configs/metadata.json, configs/inference.json and models/model.pt)"
            )
        spec = ModelSpec.read(spec_path)
        if spec.quantization is not None:
            module = _load_quantized(path, spec)
        elif (path / WEIGHTS_FILE).exists():
            module = _load_registered(spec, path / WEIGHTS_FILE)
        else:
            candidates = [path / f"model{suffix}" for suffix in TORCH_SUFFIXES]
            found = [c for c in candidates if c.exists()]
            if not found:
                raise ValueError(f"{path}: no weights found (expected {WEIGHTS_FILE} or model.pt)")
            module, spec = _load_torch_file(found[0], spec, trust)
    elif path.suffix == ".safetensors":
        spec_path = path.with_suffix(".json")
        if not spec_path.exists():
            raise ValueError(f"{path}: no model spec found: expected {spec_path.name} beside it")
        spec = ModelSpec.read(spec_path)
        module = _load_registered(spec, path)
    elif path.suffix in TORCH_SUFFIXES:
        spec_path = path.with_suffix(".json")
        spec = ModelSpec.read(spec_path) if spec_path.exists() else None
        module, spec = _load_torch_file(path, spec, trust)
    else:
        raise ValueError(
            f"{path}: unknown model format {path.suffix!r} "
            f"(use a model folder, .safetensors or one of {', '.join(TORCH_SUFFIXES)})"
        )
    _check_finite(module, path)
    module.eval()
    return LoadedModel(module=module, spec=spec, path=path)


def _unwrap(model: nn.Module | LoadedModel) -> nn.Module:
    return model.module if isinstance(model, LoadedModel) else model


def save_model(
    model: nn.Module | LoadedModel,
    spec: ModelSpec,
    path: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a model as a folder (``model.json`` + weights) or a ``.safetensors`` + ``.json`` pair.

    Registered architectures are written as safetensors (no code in the file); a TorchScript
    module as ``model.pt`` with its spec also embedded in the archive.

    Parameters
    ----------
    model : torch.nn.Module or LoadedModel
        The network to save.
    spec : ModelSpec
        Its spec; ``size_divisor`` is taken from the module when it declares one.
    path : str or Path
        A folder (created), or a file ending in ``.safetensors``.
    overwrite : bool
        Replace an existing model there; otherwise an existing spec file raises ValueError.

    Returns
    -------
    pathlib.Path
        The folder or file written (what :func:`load_model` takes).
    """
    module = _unwrap(model)
    path = Path(path)
    divisor = int(getattr(module, "size_divisor", spec.size_divisor))
    if divisor != spec.size_divisor:
        spec = spec.with_changes(size_divisor=divisor)
    scripted = isinstance(module, torch.jit.ScriptModule)
    if path.suffix == ".safetensors":
        spec_path, weights_path = path.with_suffix(".json"), path
    else:
        spec_path = path / SPEC_FILE
        weights_path = path / ("model.pt" if scripted else WEIGHTS_FILE)
    if spec_path.exists() and not overwrite:
        raise ValueError(f"{spec_path}: a model is already saved there (pass overwrite=True)")
    if scripted:
        if path.suffix == ".safetensors":
            raise ValueError(f"{path}: a TorchScript module is saved as a folder, not safetensors")
        spec = spec.with_changes(architecture="torchscript")
    elif spec.architecture not in known_architectures():
        raise ValueError(
            f"{path}: cannot save architecture {spec.architecture!r} as weights only; save a "
            "registered architecture or a TorchScript module"
        )

    def write_weights(weights: Path) -> None:
        if scripted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(module, str(weights), _extra_files={SPEC_FILE: spec.to_json()})
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(weights), metadata={"format": "pt", "segbench": "1"})

    def write_folder(temp: Path) -> None:
        write_weights(temp / weights_path.name)
        spec.write(temp / SPEC_FILE)

    if path.suffix == ".safetensors":
        # Two files cannot be swapped in as one; each is atomic, the weights first.
        atomic_write(weights_path, write_weights)
        atomic_write(spec_path, spec.write)
    else:
        # Built beside the target and swapped in whole, so a kill leaves the old model or the new.
        atomic_write_folder(path, write_folder, replaceable=MODEL_FILES)
    return path


def _json_safe(value: Any) -> Any:
    """Turn config values (dataclasses, enums, tuples, paths) into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_safe(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return _json_safe(value.value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _quantization_metadata(
    result: Any, base: LoadedModel, label: str | None = None
) -> dict[str, Any]:
    config = getattr(result, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        config_dict = config.to_dict()
    else:
        config_dict = _json_safe(config) if config is not None else {}
    metadata: dict[str, Any] = {"file": QUANTIZED_WEIGHTS_FILE, "config": _json_safe(config_dict)}
    if isinstance(config_dict, dict):
        for key in ("weight_bits", "act_bits", "method"):
            if key in config_dict:
                metadata[key] = _json_safe(config_dict[key])
        # core.quant.QuantConfig calls the weight bit width ``bits`` (weights only).
        if "bits" in config_dict and "weight_bits" not in metadata:
            metadata["weight_bits"] = _json_safe(config_dict["bits"])
        if "weight_bits" in metadata:
            method = metadata.get("method", "")
            act = metadata.get("act_bits")
            width = f"W{metadata['weight_bits']}" + (f"A{act}" if act else "")
            metadata["label"] = f"{method} {width}".strip()
    if label:
        metadata["label"] = label
    metadata["base_model"] = base.name
    return metadata


def quantized_variant(result: Any, base: LoadedModel, name: str | None = None) -> LoadedModel:
    """The quantized model of ``result`` as a :class:`LoadedModel`, ready for inference.

    Its spec is ``base``'s with the same ``quantization`` metadata that
    :func:`save_quantized_model` writes, so a variant made in memory and one loaded back from
    its folder describe themselves alike. ``name`` (e.g. "W4 FlexRound (tensor, block)")
    becomes its label and display name.
    """
    _check_quantized_finite(result, name or base.name)
    metadata = _quantization_metadata(result, base, label=name)
    spec = base.spec.with_changes(quantization=metadata)
    framework = None
    if base.framework is not None:
        # The framework keeps running its own inference, now on the quantized networks.
        framework = base.framework.with_members(
            [result.model, *(member.model for member in result.members)]
        )
    return LoadedModel(
        module=result.model,
        spec=spec,
        path=None,
        name=name or display_name(spec, None),
        framework=framework,
    )


def _save_quantized_framework_model(
    result: Any, base: LoadedModel, folder: Path, metadata: dict[str, Any], overwrite: bool
) -> Path:
    """Write a quantized framework model in the framework's own layout.

    The folder is one the framework itself opens (for nnU-Net, a trained model folder that
    ``nnUNetPredictor`` runs) holding the fake-quantized weights, with each member's integer
    codes and scales beside its weights (``quantized.safetensors``) and the quantization
    metadata in :data:`core.models.frameworks.QUANTIZATION_FILE`.
    """
    import json

    from core import quant
    from core.models.frameworks import QUANTIZATION_FILE, detect_framework

    if folder.exists() and any(folder.iterdir()):
        if detect_framework(folder) is None or not (folder / QUANTIZATION_FILE).exists():
            raise ValueError(
                f"{folder}: exists and does not hold a quantized model; refusing to replace it"
            )
        if not overwrite:
            raise ValueError(f"{folder}: a model is already saved there (pass overwrite=True)")
    results = [result, *result.members]
    for member_result in results:
        _check_quantized_finite(member_result, folder)  # before anything is written
    variant = base.framework.with_members([r.model for r in results])

    def write(temp: Path) -> None:
        member_folders = variant.save_members(temp)
        for member_result, member_folder in zip(results, member_folders, strict=True):
            quant.save_quantized(member_result, member_folder / QUANTIZED_WEIGHTS_FILE)
        (temp / QUANTIZATION_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")

    # An earlier quantized model of this kind may be replaced whole (its member folders too);
    # anything else in the folder is the user's and makes the save refuse.
    earlier = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    replaceable = {QUANTIZATION_FILE, *variant.layout_names(earlier)}
    atomic_write_folder(folder, write, replaceable=replaceable)
    return folder


def save_quantized_model(
    result: Any,
    base: LoadedModel,
    path: str | Path,
    *,
    overwrite: bool = False,
    label: str | None = None,
) -> Path:
    """Write a quantized variant of ``base`` as a model folder :func:`load_model` reads back.

    The folder holds ``model.json`` (the base spec plus ``"quantization"`` metadata from
    ``result.config``), ``model.safetensors`` (the float base weights the quantized layers are
    put into) and ``quantized.safetensors`` written by :func:`core.quant.save_quantized`.

    Parameters
    ----------
    result : core.quant.QuantResult
        What :func:`core.quant.quantize_model` returned.
    base : LoadedModel
        The float model that was quantized.
    path : str or Path
        Folder to write (created).
    overwrite : bool
        Replace an existing model in the folder.
    label : str, optional
        The variant's name, stored as its label (e.g. "W4 FlexRound (tensor, block)").

    Returns
    -------
    pathlib.Path
        The folder.
    """
    from core import quant  # lazy: core.models must import without the quantization package

    folder = Path(path)
    if folder.suffix == ".safetensors":
        raise ValueError(f"{folder}: a quantized model is saved as a folder")
    if base.framework is not None:
        metadata = _quantization_metadata(result, base, label)
        return _save_quantized_framework_model(result, base, folder, metadata, overwrite)
    spec_path = folder / SPEC_FILE
    if spec_path.exists() and not overwrite:
        raise ValueError(f"{spec_path}: a model is already saved there (pass overwrite=True)")
    if base.spec.architecture not in known_architectures():
        raise ValueError(
            f"{folder}: only registered architectures can be saved quantized "
            f"(base is {base.spec.architecture!r})"
        )
    _check_quantized_finite(result, folder)  # before anything is written
    spec = base.spec.with_changes(quantization=_quantization_metadata(result, base, label))
    base_state = {k: v.detach().cpu().contiguous() for k, v in base.module.state_dict().items()}

    def write(temp: Path) -> None:
        save_file(base_state, str(temp / WEIGHTS_FILE), metadata={"format": "pt", "segbench": "1"})
        quant.save_quantized(result, temp / QUANTIZED_WEIGHTS_FILE)
        spec.write(temp / SPEC_FILE)

    # Built beside the target and swapped in whole: a kill never leaves an earlier spec beside
    # new weights (which would load under the wrong name).
    atomic_write_folder(folder, write, replaceable=MODEL_FILES)
    return folder
