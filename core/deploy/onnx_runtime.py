"""ONNX Runtime as an inference backend: an ONNX network that segbench's inference can call.

:class:`OnnxRuntimeNetwork` is a torch module in name only: its forward hands the batch to an
``onnxruntime.InferenceSession`` and returns the logits as a tensor, so
:func:`core.models.predict` (sliding windows, padding, blending, batching) runs it exactly as
it runs a torch network and the two backends' results are comparable. The CPU execution
provider runs it, the CUDA provider when the batch is on a GPU and onnxruntime has one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from core.deploy.onnx_export import (
    EXPORT_KEY,
    MEMBER_KEY,
    SPEC_KEY,
    build_member_onnx,
    build_onnx,
)
from core.models.loaded import LoadedModel
from core.models.spec import ModelSpec

__all__ = [
    "BACKENDS",
    "OnnxRuntimeMembers",
    "OnnxRuntimeNetwork",
    "open_onnx_model",
    "with_backend",
]

BACKENDS = ("torch", "onnxruntime")
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX model run by ONNX Runtime behind a torch module's ``forward``.

    Parameters
    ----------
    model_bytes : bytes
        The serialized ONNX model.
    source : str
        What to name in error messages (the file, or the model it was exported from).

    Notes
    -----
    Sessions are made on first use, one per (provider, thread count): ONNX Runtime's intra-op
    threads follow ``torch.get_num_threads()`` so the GUI's and the benchmarks' thread settings
    apply to both backends alike.
    """

    is_onnx = True

    def __init__(self, model_bytes: bytes, source: str) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.source = source
        self._sessions: dict[tuple[str, int], ort.InferenceSession] = {}
        self.last_provider = _CPU

    @property
    def size_bytes(self) -> int:
        """Bytes of the serialized model (the ONNX file's size)."""
        return len(self.model_bytes)

    @property
    def out_channels(self) -> int | None:
        """The output's channel count when the model fixes it (segbench's exports do)."""
        shape = self.session().get_outputs()[0].shape
        return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxRuntimeNetwork:
        # Inference copies torch modules before changing their memory format; a session is
        # read-only and thread-safe to run, so every "copy" shares this one.
        return self

    def session(self, provider: str = _CPU) -> ort.InferenceSession:
        """The session for ``provider`` at the current torch thread count."""
        threads = torch.get_num_threads()
        key = (provider, threads)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # warnings about hardware-specific layouts are noise
            # Idle threads sleep instead of spinning, as OMP_WAIT_POLICY=PASSIVE does for torch:
            # the GUI thread and other programs share these cores.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers = [provider, _CPU] if provider != _CPU else [_CPU]
            try:
                self._sessions[key] = ort.InferenceSession(
                    self.model_bytes, options, providers=providers
                )
            except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types
                raise ValueError(
                    f"{self.source}: ONNX Runtime cannot load the model ({error})"
                ) from error
        return self._sessions[key]

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        wants_cuda = batch.device.type == "cuda" and _CUDA in ort.get_available_providers()
        provider = _CUDA if wants_cuda else _CPU
        session = self.session(provider)
        name = session.get_inputs()[0].name
        array = np.ascontiguousarray(batch.detach().float().cpu().numpy())
        try:
            (logits, *_) = session.run(None, {name: array})
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types
            raise RuntimeError(f"ONNX Runtime failed: {str(error).strip()[:300]}") from error
        self.last_provider = session.get_providers()[0]
        return torch.from_numpy(logits).to(batch.device)


def _spec_from(path: Path, metadata: dict[str, str]) -> ModelSpec:
    if MEMBER_KEY in metadata and SPEC_KEY not in metadata:
        try:
            member = json.loads(metadata[MEMBER_KEY])
            what = f"{member['member']} of a {member['framework']} model"
        except (ValueError, KeyError, TypeError):
            what = "one member network of a framework model"
        raise ValueError(
            f"{path}: {what}, which runs only inside its framework's pipeline; open the deploy "
            "folder it lies in instead"
        )
    if SPEC_KEY in metadata:
        return ModelSpec.from_json(metadata[SPEC_KEY], source=f"{path} (metadata {SPEC_KEY})")
    beside = path.with_suffix(".json")
    if beside.is_file():
        return ModelSpec.read(beside)
    raise ValueError(
        f"{path}: no segbench model spec in its metadata_props ({SPEC_KEY}) and no "
        f"{beside.name} beside it: export it with `main.py export`, or write the spec beside it"
    )


def open_onnx_model(path: str | Path) -> LoadedModel:
    """Open an ONNX file for inference with ONNX Runtime.

    The spec comes from the file's ``metadata_props`` (written by :func:`export_onnx`), or
    from ``name.json`` beside a foreign ONNX file.

    Raises
    ------
    ValueError
        An unreadable file, one ONNX Runtime cannot load, or no spec.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the ONNX file ({error.strerror})") from None
    network = OnnxRuntimeNetwork(data, str(path))
    metadata = network.session().get_modelmeta().custom_metadata_map
    spec = _spec_from(path, dict(metadata))
    quant = spec.quantization
    if quant is not None:
        # The integer weights live in the ONNX file; the app's own quantized file does not.
        quant = {**quant, "file": path.name}
        try:
            quant["export"] = json.loads(metadata.get(EXPORT_KEY, "{}"))
        except json.JSONDecodeError:
            quant["export"] = {}
    return LoadedModel(module=network, spec=spec.with_changes(quantization=quant), path=path)


class OnnxRuntimeMembers(nn.ModuleList):
    """The ONNX Runtime networks of a framework model's members (its ``module`` on that
    backend): says it is ONNX and how many bytes the models take together."""

    is_onnx = True

    @property
    def size_bytes(self) -> int:
        return sum(member.size_bytes for member in self)


def with_backend(
    model: LoadedModel, backend: str | None, *, quant_result: Any = None
) -> LoadedModel:
    """``model`` ready to run on ``backend`` (None: the model's own).

    A torch model asked to run in ONNX Runtime is exported in memory first (quantized variants
    with their integer weights and QDQ activations, as :func:`export_onnx` writes them). A
    framework model (nnU-Net, MONAI bundle) keeps its framework's pipeline; each member network
    is exported (:func:`core.deploy.onnx_export.build_member_onnx`) and runs in ONNX Runtime
    inside it.

    Raises
    ------
    ValueError
        An unknown backend, or an ONNX model asked to run in torch.
    """
    if backend is None or backend == model.backend:
        return model
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use {' or '.join(BACKENDS)}")
    if backend == "torch":
        raise ValueError(
            f"{model.path or model.name}: an ONNX model runs only with the onnxruntime backend"
        )
    if model.framework is not None:
        names = model.framework.member_names()
        built = build_member_onnx(model, quant_result=quant_result)
        networks = [
            OnnxRuntimeNetwork(proto.SerializeToString(), f"{model.name} {name} (exported to ONNX)")
            for (proto, _summary), name in zip(built, names, strict=True)
        ]
        return LoadedModel(
            module=OnnxRuntimeMembers(networks),
            spec=model.spec,
            path=model.path,
            name=model.name,
            framework=model.framework.with_runtime(networks),
        )
    proto, _summary = build_onnx(model, quant_result=quant_result)
    network = OnnxRuntimeNetwork(proto.SerializeToString(), f"{model.name} (exported to ONNX)")
    return LoadedModel(module=network, spec=model.spec, path=model.path, name=model.name)
