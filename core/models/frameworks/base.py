"""What segbench asks of a model that another framework runs (nnU-Net v2, a MONAI bundle).

Such a model keeps its framework's own inference (preprocessing, sliding window, ensembling,
export to the image grid); segbench only needs the operations below. Quantization works on
:meth:`FrameworkModel.members` (one network per ensemble member, e.g. per nnU-Net fold) and puts
the quantized networks back with :meth:`FrameworkModel.with_members`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from core.io.image import Image
from core.jobs import CancelToken, ProgressCallback

__all__ = ["FrameworkModel"]


class FrameworkModel(Protocol):
    """A network with its framework's inference pipeline."""

    #: The framework in words, e.g. "nnU-Net v2".
    framework: str
    #: The (first member's) network, for descriptions and layer tables.
    network: nn.Module
    folder: Path

    def describe(self) -> dict[str, Any]:
        """Framework facts (configuration, folds, channels, patch size, spacing, ...)."""

    def class_names(self) -> list[str]:
        """One name per probability channel, background first."""

    def predict(
        self,
        images: Sequence[Image],
        *,
        device: str | torch.device = "auto",
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Probabilities ``(C, I, J, K)`` on the grid of ``images`` (one image per channel)."""

    def calibration_inputs(
        self, cases: Sequence[Sequence[Image]], *, n: int, seed: int, crop: int | None = None
    ) -> torch.Tensor:
        """Network inputs cut from the framework-preprocessed cases."""

    def member_names(self) -> list[str]:
        """What each member is called in progress and reports (``"fold 0"``, ...)."""

    def members(self) -> list[nn.Module]:
        """One network per ensemble member, each with its own weights."""

    def with_members(self, modules: Sequence[nn.Module]) -> FrameworkModel:
        """The same model running ``modules`` instead of its members' networks."""

    def with_runtime(self, networks: Sequence[nn.Module]) -> FrameworkModel:
        """The same model whose members' forward passes run ``networks`` as they are (one per
        member, e.g. ONNX Runtime sessions), inside the framework's own pipeline."""

    def layout_names(self, names: set[str]) -> set[str]:
        """Which of ``names`` (entries of a folder) belong to this framework's model layout."""

    def member_folders(self, folder: Path) -> list[Path]:
        """Each member's folder in a model folder ``folder`` of this layout (``fold_K``,
        ``models``): where its weights, integer codes or ONNX network lie."""

    def save_layout(self, folder: Path) -> None:
        """Write the framework's own files besides the weights (plans, configs)."""

    def deploy_facts(self) -> dict[str, Any]:
        """What the weight files tell the pipeline besides the weights, kept in a deploy
        folder's manifest (which has ONNX networks instead)."""

    def save_members(self, folder: Path) -> list[Path]:
        """Write the model in the framework's own layout into the empty ``folder``.

        Returns each member's folder (where segbench puts that member's integer codes).
        """
