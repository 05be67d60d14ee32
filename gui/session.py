"""What the workbench has open: the image, its ground truth, model variants and results.

The session holds state and announces changes with signals; panels and views subscribe. It does
no numerics: results come from ``core.pipeline`` and quantized variants from ``core.quant``.

Memory: a result keeps only its label map (uint8/uint16, shared with the views); probabilities
are kept once per model variant, in float16, so that another decision rule on the same variant
skips the network. On a 512x512x300 CT one variant's probabilities take 630 MB, so by default
only the variant segmented last keeps them (:attr:`Session.keep_all_probabilities` keeps every
variant's) and :meth:`Session.release_probabilities` drops them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.display import LabelVolume
from core.io import Image
from core.models import LoadedModel
from core.pipeline import SegmentationResult

__all__ = ["ModelVariant", "ResultEntry", "ResultsMemory", "Session"]


@dataclass
class ModelVariant:
    """A model the user can segment with: the loaded FP32 model or a quantized copy of it."""

    name: str
    model: LoadedModel
    quant_result: Any = None  # core.quant.QuantResult for variants made in this session
    #: The model exported for the other backend, made on first use (an export takes seconds).
    other_backend: LoadedModel | None = None

    @property
    def is_quantized(self) -> bool:
        return self.quant_result is not None or self.model.spec.quantization is not None

    def on_backend(self, backend: str) -> LoadedModel:
        """The variant's model ready for ``backend`` (exported to ONNX once, then kept).

        Raises ValueError for an ONNX model asked to run in torch.
        """
        if backend == self.model.backend:
            return self.model
        if self.other_backend is None or self.other_backend.backend != backend:
            from core.deploy.onnx_runtime import with_backend  # lazy: onnxruntime is heavy

            self.other_backend = with_backend(self.model, backend, quant_result=self.quant_result)
        return self.other_backend

    def result_name(self, backend: str) -> str:
        """The results table's name of a run on ``backend``: the backend added when not its own."""
        return self.name if backend == self.model.backend else f"{self.name} [{backend}]"


@dataclass
class ResultEntry:
    """One row of the results table: a (variant, decision rule) segmentation.

    ``labels`` is the label map prepared for the views; ``result.mask`` is the same array.
    """

    key: str  # "<variant> + <decision>"
    variant: str
    result: SegmentationResult
    labels: LabelVolume


@dataclass(frozen=True)
class ResultsMemory:
    """Bytes the session holds for its results: label maps and cached probabilities."""

    masks: int
    probabilities: int


class Session(QObject):
    """The open image, ground truth, model variants, cached probabilities and results."""

    image_changed = Signal(object)  # Image | None
    ground_truth_changed = Signal(object)  # np.ndarray | None
    variants_changed = Signal()
    results_changed = Signal()
    memory_changed = Signal()  # results or cached probabilities came or went

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.image: Image | None = None
        self.ground_truth: np.ndarray | None = None
        self.ground_truth_path: str | None = None
        self.variants: dict[str, ModelVariant] = {}
        self.results: dict[str, ResultEntry] = {}
        # Float16 probabilities per variant for the current image, the last used last:
        # switching the decision rule reuses them instead of running the network again.
        self._probs: dict[str, np.ndarray] = {}
        self.keep_all_probabilities = False

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
        self.memory_changed.emit()

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
        self.memory_changed.emit()
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
        """The variant's float16 probabilities on the current image, or None (not kept)."""
        return self._probs.get(variant)

    def cached_model_decision(self, variant: str) -> np.ndarray | None:
        """The uncalibrated argmax a result of ``variant`` kept (vector-scaled guarded models
        only; :attr:`core.pipeline.SegmentationResult.model_decision`), or None."""
        for entry in reversed(self.results.values()):
            if entry.variant == variant and entry.result.model_decision is not None:
                return entry.result.model_decision
        return None

    def cache_probs(self, variant: str, probs: np.ndarray) -> None:
        """Keep ``variant``'s probabilities; other variants' go unless every variant keeps them.

        One CT's probabilities take hundreds of MB: keeping only the variant segmented last
        bounds memory to one set while still letting its decision rule change for free.
        """
        self._probs.pop(variant, None)
        if not self.keep_all_probabilities:
            self._probs.clear()
        self._probs[variant] = probs
        self.memory_changed.emit()

    def release_probabilities(self) -> int:
        """Drop every cached probability map; returns the bytes released.

        The next decision on a variant runs its network again.
        """
        released = sum(p.nbytes for p in self._probs.values())
        self._probs.clear()
        self.memory_changed.emit()
        return released

    def memory(self) -> ResultsMemory:
        """What the results hold (each label map counted once, however many rows share it)."""
        masks = {id(e.labels.array): e.labels.nbytes for e in self.results.values()}
        for entry in self.results.values():  # a vector-scaled model's own argmax, shared
            own = entry.result.model_decision
            if own is not None:
                masks[id(own)] = own.nbytes
        probabilities = sum(p.nbytes for p in self._probs.values())
        return ResultsMemory(sum(masks.values()), probabilities)

    # --- results ---------------------------------------------------------------------------
    def remove_result(self, key: str) -> tuple[int, ResultEntry]:
        """Take a result out of the table; returns its row and entry so it can be put back."""
        index = list(self.results).index(key)
        entry = self.results.pop(key)
        self.results_changed.emit()
        self.memory_changed.emit()
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
        self.results_changed.emit()
        self.memory_changed.emit()

    def add_result(
        self,
        variant: str,
        result: SegmentationResult,
        labels: LabelVolume,
        probs: np.ndarray | None = None,
    ) -> ResultEntry:
        """Store a result (replacing the same variant + rule) and cache its probabilities.

        Parameters
        ----------
        variant : str
            The model variant's name.
        result : core.pipeline.SegmentationResult
            Its readouts; ``result.mask`` should be ``labels.array`` (one copy).
        labels : core.display.LabelVolume
            The label map prepared for the views.
        probs : numpy.ndarray, optional
            The probabilities the decision was made from (see :meth:`cache_probs`).
        """
        key = f"{variant} + {result.rule_label}"
        entry = ResultEntry(key, variant, result, labels)
        self.results[key] = entry
        self.results_changed.emit()
        if probs is not None:
            self.cache_probs(variant, probs)  # emits memory_changed
        else:
            self.memory_changed.emit()
        return entry
