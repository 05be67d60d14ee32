"""Where the embedded demo files live (``resources/demo/`` next to the ``core`` package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoPaths", "demo_paths", "demo_root"]


def demo_root() -> Path:
    """The ``resources/demo`` folder of this checkout or installation."""
    return Path(__file__).resolve().parent.parent / "resources" / "demo"


@dataclass(frozen=True)
class DemoPaths:
    """Files of the CT demo.

    Attributes
    ----------
    image : Path
        Held-out synthetic CT phantom, ``image.nii.gz`` (int16 HU, 0.8 x 0.8 x 2.5 mm).
    label : Path
        Its ground-truth label map, ``label.nii.gz`` (uint8: 0 background, 1 liver,
        2 kidney, 3 lesion).
    model : Path
        The demo model folder (``model.json`` + ``model.safetensors``).
    metrics : Path
        ``model/metrics.json``: the held-out argmax Dice recorded when the model was trained.
    readme : Path
        What the files are and how they were made.
    natural_image, natural_label, natural_model, natural_metrics : Path
        The natural-image demo: ``natural/image.png`` (RGB discs and boxes on a texture
        photograph), ``natural/label.png`` (0 background, 1 disc, 2 box) and its model folder.
    """

    image: Path
    label: Path
    model: Path
    metrics: Path
    readme: Path
    natural_image: Path
    natural_label: Path
    natural_model: Path
    natural_metrics: Path

    def missing(self) -> list[Path]:
        """CT demo files that do not exist (an empty list when the demo is complete)."""
        return [p for p in (self.image, self.label, self.model, self.metrics) if not p.exists()]

    def natural_missing(self) -> list[Path]:
        """Natural-image demo files that do not exist."""
        files = (self.natural_image, self.natural_label, self.natural_model, self.natural_metrics)
        return [p for p in files if not p.exists()]


def demo_paths() -> DemoPaths:
    """Paths of the CT demo files (they may be missing in a stripped installation).

    Returns
    -------
    DemoPaths
    """
    root = demo_root()
    return DemoPaths(
        image=root / "image.nii.gz",
        label=root / "label.nii.gz",
        model=root / "model",
        metrics=root / "model" / "metrics.json",
        readme=root / "README.md",
        natural_image=root / "natural" / "image.png",
        natural_label=root / "natural" / "label.png",
        natural_model=root / "natural" / "model",
        natural_metrics=root / "natural" / "model" / "metrics.json",
    )
