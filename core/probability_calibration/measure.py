"""Measuring probability calibration on labelled cases: reliability diagrams, ECE, the tail.

Per class (one against the rest): pixels are put into equal-width probability bins; each bin
records its pixel count, the sum of the predicted probabilities and the number of pixels truly
of the class. A calibrated model has, in every bin, mean prediction equal to observed
frequency. The expected calibration error (ECE) is the count-weighted mean gap between them.
The *tail* is what RankSEG-RMA is most sensitive to: the sum of the small probabilities
(below 0.05) against the true positives among those pixels; a tail mass far above its
positives inflates the expected volume that RMA matches its mask to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "TAIL_PROBABILITY",
    "ClassCalibration",
    "ReliabilityTally",
    "classes_from_records",
    "summarize_records",
]

#: Probabilities below this form the tail.
TAIL_PROBABILITY = 0.05
_CHUNK_PIXELS = 1 << 20


@dataclass(frozen=True)
class ClassCalibration:
    """The calibration of one class over the measured pixels."""

    label: int
    name: str
    bin_edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray  # NaN in empty bins
    observed: np.ndarray  # NaN in empty bins
    ece: float
    tail_mass: float
    tail_positives: int
    expected_volume: float  # sum of p over every pixel
    true_volume: int

    @property
    def tail_ratio(self) -> float:
        """Tail mass over tail positives (inf when there is mass but no positive)."""
        if self.tail_positives:
            return self.tail_mass / self.tail_positives
        return float("inf") if self.tail_mass > 0 else 1.0

    def to_dict(self) -> dict[str, Any]:
        def clean(values: np.ndarray) -> list[float | None]:
            return [None if not np.isfinite(v) else float(v) for v in values]

        return {
            "label": self.label,
            "class": self.name,
            "ece": self.ece,
            "tail_mass": self.tail_mass,
            "tail_positives": self.tail_positives,
            "expected_volume_px": self.expected_volume,
            "true_volume_px": self.true_volume,
            "bins": {
                "edges": [float(v) for v in self.bin_edges],
                "counts": [int(v) for v in self.counts],
                "mean_predicted": clean(self.mean_predicted),
                "observed": clean(self.observed),
            },
        }


class ReliabilityTally:
    """Bin counts per class, summed over any number of labelled cases.

    Parameters
    ----------
    class_names : list of str
    bins : int
        Equal-width probability bins over [0, 1].
    """

    def __init__(self, class_names: list[str], bins: int = 15) -> None:
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        self.class_names = list(class_names)
        self.bins = bins
        n = len(class_names)
        self.counts = np.zeros((n, bins), dtype=np.int64)
        self.sum_p = np.zeros((n, bins))
        self.positives = np.zeros((n, bins), dtype=np.int64)
        # True pixels minus summed probability per bin, kept on its own: the ECE is a sum of
        # small gaps between large sums, and a report rounds each sum to 6 digits.
        self.gap = np.zeros((n, bins))
        self.tail_mass = np.zeros(n)
        self.tail_positives = np.zeros(n, dtype=np.int64)
        self.cases = 0

    def add(self, probs: np.ndarray, truth: np.ndarray) -> None:
        """Add one case: probabilities (C, *spatial) and labels (*spatial).

        Pixels whose label is outside 0..C-1 are left out (they belong to no class).
        """
        n = len(self.class_names)
        if probs.shape[0] != n:
            raise ValueError(f"probabilities have {probs.shape[0]} classes, expected {n}")
        if truth.shape != probs.shape[1:]:
            raise ValueError(f"ground truth shape {truth.shape} does not match {probs.shape[1:]}")
        flat = probs.reshape(n, -1)
        labels = truth.reshape(-1)
        for start in range(0, labels.size, _CHUNK_PIXELS):
            stop = start + _CHUNK_PIXELS
            y = labels[start:stop].astype(np.int64)
            known = (y >= 0) & (y < n)
            y = y[known]
            part = flat[:, start:stop][:, known].astype(np.float64)
            index = np.minimum((part * self.bins).astype(np.int64), self.bins - 1)
            tail = part < TAIL_PROBABILITY
            for c in range(n):
                positive = y == c
                self.counts[c] += np.bincount(index[c], minlength=self.bins)
                mass = np.bincount(index[c], weights=part[c], minlength=self.bins)
                hits = np.bincount(index[c][positive], minlength=self.bins)
                self.sum_p[c] += mass
                self.positives[c] += hits
                self.gap[c] += hits - mass
                self.tail_mass[c] += part[c][tail[c]].sum()
                self.tail_positives[c] += int(np.count_nonzero(positive & tail[c]))
        self.cases += 1

    def to_record(self) -> dict[str, Any]:
        """The tally as plain data (lists of numbers), e.g. one case's part of a report."""
        return {
            "classes": list(self.class_names),
            "bins": self.bins,
            "cases": self.cases,
            "counts": self.counts.tolist(),
            "sum_p": self.sum_p.tolist(),
            "positives": self.positives.tolist(),
            "gap": self.gap.tolist(),
            "tail_mass": self.tail_mass.tolist(),
            "tail_positives": self.tail_positives.tolist(),
        }

    def add_record(self, record: dict[str, Any]) -> None:
        """Add a tally given as :meth:`to_record` made it (same classes and bins)."""
        if list(record["classes"]) != self.class_names or int(record["bins"]) != self.bins:
            raise ValueError("a calibration record of other classes or bins cannot be added")
        self.counts += np.asarray(record["counts"], dtype=np.int64)
        self.sum_p += np.asarray(record["sum_p"], dtype=np.float64)
        self.positives += np.asarray(record["positives"], dtype=np.int64)
        self.gap += np.asarray(record["gap"], dtype=np.float64)
        self.tail_mass += np.asarray(record["tail_mass"], dtype=np.float64)
        self.tail_positives += np.asarray(record["tail_positives"], dtype=np.int64)
        self.cases += int(record["cases"])

    def classes(self) -> list[ClassCalibration]:
        """The per-class reliability diagrams, ECE and tail figures."""
        edges = np.linspace(0.0, 1.0, self.bins + 1)
        out = []
        for c, name in enumerate(self.class_names):
            counts = self.counts[c]
            total = max(int(counts.sum()), 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_p = np.where(counts > 0, self.sum_p[c] / counts, np.nan)
                observed = np.where(counts > 0, self.positives[c] / counts, np.nan)
            ece = float(np.abs(self.gap[c]).sum() / total)
            out.append(
                ClassCalibration(
                    label=c,
                    name=name,
                    bin_edges=edges,
                    counts=counts.copy(),
                    mean_predicted=mean_p,
                    observed=observed,
                    ece=ece,
                    tail_mass=float(self.tail_mass[c]),
                    tail_positives=int(self.tail_positives[c]),
                    expected_volume=float(self.sum_p[c].sum()),
                    true_volume=int(self.positives[c].sum()),
                )
            )
        return out


def summarize_records(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per model, the classes' calibration over the per-case records ``{"model": ..., **tally}``.

    Models keep their first-seen order; each value is a list of :meth:`ClassCalibration.to_dict`.
    """
    tallies: dict[str, ReliabilityTally] = {}
    for record in records:
        model = record["model"]
        if model not in tallies:
            tallies[model] = ReliabilityTally(list(record["classes"]), int(record["bins"]))
        tallies[model].add_record(record)
    return {model: [c.to_dict() for c in t.classes()] for model, t in tallies.items()}


def classes_from_records(section: list[dict[str, Any]]) -> list[ClassCalibration]:
    """Rebuild :class:`ClassCalibration` objects from their ``to_dict`` form (a report)."""
    classes = []
    for entry in section:
        bins = entry["bins"]

        def array(key: str, bins=bins) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in bins[key]], dtype=float)

        classes.append(
            ClassCalibration(
                label=int(entry["label"]),
                name=str(entry["class"]),
                bin_edges=array("edges"),
                counts=np.asarray(bins["counts"], dtype=np.int64),
                mean_predicted=array("mean_predicted"),
                observed=array("observed"),
                ece=float(entry["ece"]),
                tail_mass=float(entry["tail_mass"]),
                tail_positives=int(entry["tail_positives"]),
                expected_volume=float(entry["expected_volume_px"]),
                true_volume=int(entry["true_volume_px"]),
            )
        )
    return classes
