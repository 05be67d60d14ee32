"""What the workbench has open: the image, its ground truth, model variants and results.

The session holds state and announces changes with signals; panels and views subscribe. It does
no numerics: results come from ``core.pipeline`` and quantized variants from ``core.quant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.io import Image
from core.models import LoadedModel
from core.pipeline import SegmentationResult

__all__ = ["ModelVariant", "ResultEntry", "Session"]


@dataclass
class ModelVariant:
    """A model the user can segment with: the loaded FP32 model or a quantized copy of it."""

    name: str
    model: LoadedModel
    quant_result: Any = None  # core.quant.QuantResult for variants made in this session

    @property
    def is_quantized(self) -> bool:
        return self.quant_result is not None or self.model.spec.quantization is not None


@dataclass
class ResultEntry:
    """One row of the results table: a (variant, decision rule) segmentation."""

    key: str  # "<variant> + <decision>"
    variant: str
    result: SegmentationResult


class Session(QObject):
    """The open image, ground truth, model variants, cached probabilities and results."""

    image_changed = Signal(object)  # Image | None
    ground_truth_changed = Signal(object)  # np.ndarray | None
    variants_changed = Signal()
    results_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.image: Image | None = None
        self.ground_truth: np.ndarray | None = None
        self.ground_truth_path: str | None = None
        self.variants: dict[str, ModelVariant] = {}
        self.results: dict[str, ResultEntry] = {}
        # Probabilities per variant for the current image: switching the decision rule reuses
        # them instead of running the network again.
        self._probs: dict[str, np.ndarray] = {}

    # --- image and ground truth ------------------------------------------------------------
    def set_image(self, image: Image | None) -> None:
        self.image = image
        self.ground_truth = None
        self.ground_truth_path = None
        self._probs.clear()
        self.results.clear()
        self.image_changed.emit(image)
        self.ground_truth_changed.emit(None)
        self.results_changed.emit()

    def set_ground_truth(self, mask: np.ndarray | None, path: str | None = None) -> None:
        self.ground_truth = mask
        self.ground_truth_path = path
        self.ground_truth_changed.emit(mask)

    # --- models ----------------------------------------------------------------------------
    @property
    def base_variant(self) -> ModelVariant | None:
        """The first variant that is not quantized (the model the user opened)."""
        for variant in self.variants.values():
            if not variant.is_quantized:
                return variant
        return next(iter(self.variants.values()), None)

    def set_model(self, model: LoadedModel) -> ModelVariant:
        """Open a new model: it replaces every variant (quantized ones belonged to the old one)."""
        self.variants.clear()
        self._probs.clear()
        variant = ModelVariant(model.name, model)
        self.variants[variant.name] = variant
        self.variants_changed.emit()
        return variant

    def add_variant(self, name: str, model: LoadedModel, quant_result: Any = None) -> ModelVariant:
        """Add a quantized variant; a name already taken gets a counter ("... #2")."""
        unique, n = name, 2
        while unique in self.variants:
            unique, n = f"{name} #{n}", n + 1
        variant = ModelVariant(unique, model, quant_result)
        self.variants[unique] = variant
        self.variants_changed.emit()
        return variant

    def cached_probs(self, variant: str) -> np.ndarray | None:
        return self._probs.get(variant)

    # --- results ---------------------------------------------------------------------------
    def remove_result(self, key: str) -> tuple[int, ResultEntry]:
        """Take a result out of the table; returns its row and entry so it can be put back."""
        index = list(self.results).index(key)
        entry = self.results.pop(key)
        self.results_changed.emit()
        return index, entry

    def restore_result(self, index: int, entry: ResultEntry) -> None:
        """Put a removed result back at its row (undo of :meth:`remove_result`).

        If the same (variant, rule and settings) was run again since, the newer row stays: it is
        the same decision, and replacing it would drop what the user did last.
        """
        if entry.key in self.results:
            return
        items = list(self.results.items())
        items.insert(min(index, len(items)), (entry.key, entry))
        self.results = dict(items)
        self._probs.setdefault(entry.variant, entry.result.probs)
        self.results_changed.emit()

    def add_result(self, variant: str, result: SegmentationResult) -> ResultEntry:
        """Store a result (replacing the same variant + rule) and cache its probabilities."""
        self._probs[variant] = result.probs
        key = f"{variant} + {result.rule_label}"
        entry = ResultEntry(key, variant, result)
        self.results[key] = entry
        self.results_changed.emit()
        return entry
