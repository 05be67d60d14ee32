"""The in-memory model every part of segbench passes around: a module plus its spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from core.models.spec import ModelSpec

__all__ = ["LoadedModel", "display_name"]


def display_name(spec: ModelSpec, path: Path | None) -> str:
    """The name shown in the GUI: ``"demo-ct-unet (FP32)"`` or ``"demo-ct-unet (W4A8)"``.

    The base is the spec's ``name`` (the folder or file stem when empty); the bracket says the
    precision, read from the quantization metadata (``label``, else ``weight_bits`` /
    ``act_bits``), then the probability calibration: ``"demo-ct-unet (FP32, calibrated,
    T = 1.8)"``.
    """
    base = spec.name
    if not base and path is not None:
        base = path.stem if path.is_file() else path.name
    base = base or "model"
    quant = spec.quantization
    if quant is None:
        precision = "FP32"
    elif quant.get("label"):
        precision = str(quant["label"])
    elif quant.get("weight_bits") is not None:
        act = quant.get("act_bits")
        precision = f"W{quant['weight_bits']}A{act if act else 32}"
    else:
        precision = "quantized"
    calibration = spec.probability_calibration
    if calibration is not None:
        precision += f", {calibration.describe()}"
    return f"{base} ({precision})"


@dataclass
class LoadedModel:
    """A network ready for inference.

    Attributes
    ----------
    module : torch.nn.Module
        The network in eval mode, on the CPU after loading.
    spec : ModelSpec
        Its inputs, classes, preprocessing and mode.
    path : pathlib.Path or None
        The folder or file it was loaded from (None for a model built in memory).
    name : str
        Display name, for example ``"demo-ct-unet (FP32)"``.
    framework : FrameworkModel or None
        For a model another framework runs (nnU-Net v2, ...): that framework's model, whose
        ``predict`` replaces segbench's own inference; ``module`` is then its (first) network.
    """

    module: nn.Module
    spec: ModelSpec
    path: Path | None = None
    name: str = ""
    framework: Any = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
        if not self.name:
            self.name = display_name(self.spec, self.path)
        self.module.eval()

    @property
    def backend(self) -> str:
        """``"onnxruntime"`` for an ONNX network (core.deploy.onnx_runtime), else ``"torch"``."""
        return "onnxruntime" if getattr(self.module, "is_onnx", False) else "torch"

    @property
    def storage_bytes(self) -> int:
        """Bytes of the network as it runs: the ONNX model for ONNX Runtime, else every tensor
        of the module (a fake-quantized torch variant holds float weights)."""
        size = getattr(self.module, "size_bytes", None)
        if size is not None:
            return int(size)
        tensors = [*self.module.parameters(), *self.module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def is_quantized(self) -> bool:
        """True for a quantized variant (its spec carries quantization metadata)."""
        return self.spec.quantization is not None
