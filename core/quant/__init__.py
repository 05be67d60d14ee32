"""Post-training weight quantization: FlexRound, AdaRound and round-to-nearest baselines.

Public API::

    from core.quant import QuantConfig, quantize_model, save_quantized, load_quantized
    result = quantize_model(model, calib, QuantConfig(method="flexround", bits=4))
    result.model      # new module, dequantized weights, ready for inference
    result.layers     # list of LayerReport (numpy diagnostics for the GUI)

See docs/FLEXROUND_IMPL.md for the design.
"""

from core.quant.config import METHODS, QuantConfig
from core.quant.diagnostics import LayerReport
from core.quant.ensemble import quantize_loaded_model
from core.quant.export import load_quantized, read_metadata, save_quantized
from core.quant.pipeline import QuantizedWeight, QuantResult, quantize_model

__all__ = [
    "METHODS",
    "LayerReport",
    "QuantConfig",
    "QuantResult",
    "QuantizedWeight",
    "load_quantized",
    "quantize_loaded_model",
    "quantize_model",
    "read_metadata",
    "save_quantized",
]
