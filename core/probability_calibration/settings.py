"""What a model spec stores about probability calibration: the scaling and the decision guard.

Probability calibration (not to be confused with :mod:`core.models.calibration`, the sample
inputs of post-training quantization) corrects the model's class probabilities so that, among
pixels given probability p, a fraction p is really of that class. It is stored in the spec's
``calibration`` field as plain JSON::

    {"temperature": 1.8, "class_scales": null, "class_biases": null,
     "guard": {"metric": "dice", "rules": ["rma", "rma", "argmax"], "pruning": [0.5, 0.5, 0.9]},
     "fit": {...free-form facts about the fit...}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GUARD_RULES", "DecisionGuard", "ProbabilityCalibration"]

#: The per-class rules a guard can choose between.
GUARD_RULES: tuple[str, ...] = ("rma", "argmax")

_KNOWN_FIELDS = ("temperature", "class_scales", "class_biases", "guard", "fit")


def _number_list(value: Any, n_classes: int, what: str, source: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n_classes:
        raise ValueError(f"{source}: {what} must be a list of {n_classes} numbers (one per class)")
    numbers = []
    for index, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ValueError(f"{source}: {what}[{index}] must be a finite number, not {item!r}")
        numbers.append(float(item))
    return tuple(numbers)


@dataclass(frozen=True)
class DecisionGuard:
    """Per-class decision settings learned on a calibration split.

    Attributes
    ----------
    rules : tuple of str
        One of :data:`GUARD_RULES` per class: "argmax" (the model's own argmax, before any
        vector scaling moved it) where RankSEG-RMA did not beat it on the calibration cases,
        "rma" elsewhere. The background of a softmax model
        (class 0) is always "rma": it takes what the other classes leave.
    pruning : tuple of float
        RankSEG-RMA's pruning probability per class (a class whose maximum probability is at
        or below it gets no pixels from RMA).
    metric : str
        The RMA objective ("dice" or "iou").
    min_fraction : tuple of float or None
        Per class, the smallest share of a case's pixels the model's argmax gave it on the
        calibration cases (None in guards learned before it was recorded). A case where an
        RMA-ruled class is far rarer than that is outside what the guard was learned on
        (:func:`core.probability_calibration.guard.guard_for_case`).
    """

    rules: tuple[str, ...]
    pruning: tuple[float, ...]
    metric: str = "dice"
    min_fraction: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "rules": list(self.rules),
            "pruning": list(self.pruning),
        }
        if self.min_fraction is not None:
            out["min_fraction"] = list(self.min_fraction)
        return out

    @classmethod
    def from_dict(cls, data: Any, n_classes: int, source: str) -> DecisionGuard:
        """Parse and check a guard; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: calibration.guard must be an object")
        unknown = sorted(set(data) - {"metric", "rules", "pruning", "min_fraction"})
        if unknown:
            raise ValueError(f"{source}: calibration.guard has unknown field(s) {unknown}")
        metric = data.get("metric", "dice")
        if metric not in ("dice", "iou"):
            raise ValueError(f"{source}: calibration.guard.metric must be 'dice' or 'iou'")
        rules = data.get("rules")
        if not isinstance(rules, list) or len(rules) != n_classes:
            raise ValueError(
                f"{source}: calibration.guard.rules must list {n_classes} rules (one per class)"
            )
        for index, rule in enumerate(rules):
            if rule not in GUARD_RULES:
                raise ValueError(
                    f"{source}: calibration.guard.rules[{index}] is {rule!r}; "
                    f"use one of {', '.join(GUARD_RULES)}"
                )
        pruning = _number_list(data.get("pruning"), n_classes, "calibration.guard.pruning", source)
        if not all(0.0 <= p <= 1.0 for p in pruning):
            raise ValueError(f"{source}: calibration.guard.pruning values must be in [0, 1]")
        min_fraction = None
        if data.get("min_fraction") is not None:
            what = "calibration.guard.min_fraction"
            min_fraction = _number_list(data["min_fraction"], n_classes, what, source)
            if not all(0.0 <= f <= 1.0 for f in min_fraction):
                raise ValueError(f"{source}: {what} values must be in [0, 1]")
        return cls(rules=tuple(rules), pruning=pruning, metric=metric, min_fraction=min_fraction)


@dataclass(frozen=True)
class ProbabilityCalibration:
    """A fitted correction of a model's probabilities, applied to its logits.

    Softmax models: logits are the log-probabilities (softmax is unchanged by a shift per
    pixel, so dividing them by T is exactly temperature scaling of the network's logits).
    Sigmoid models: logits are ``log(p / (1 - p))`` per class.

    Attributes
    ----------
    temperature : float
        The fitted temperature T (> 0): logits are divided by it. T > 1 softens, T < 1 sharpens.
    class_scales, class_biases : tuple of float or None
        Vector scaling: when given, logit c becomes ``logit_c * class_scales[c] +
        class_biases[c]`` instead of ``logit_c / T`` (T is kept as the single-temperature fit
        it started from).
    guard : DecisionGuard or None
        The per-class decision guard learned on the same split.
    fit : dict
        Facts about the fit (cases, pixels, negative log-likelihood before and after).
    """

    temperature: float = 1.0
    class_scales: tuple[float, ...] | None = None
    class_biases: tuple[float, ...] | None = None
    guard: DecisionGuard | None = None
    fit: dict[str, Any] = field(default_factory=dict)

    @property
    def is_vector(self) -> bool:
        return self.class_scales is not None

    def logit_scales(self, n_classes: int) -> tuple[list[float], list[float]]:
        """Per-class multipliers and offsets of the logits."""
        if self.class_scales is not None:
            biases = self.class_biases or (0.0,) * n_classes
            return list(self.class_scales), list(biases)
        return [1.0 / self.temperature] * n_classes, [0.0] * n_classes

    def describe(self) -> str:
        """Short words for the model line: ``"calibrated, T = 1.8"``."""
        text = f"calibrated, T = {self.temperature:.3g}"
        if self.is_vector:
            text += ", per-class scaling"
        if self.guard is not None:
            text += ", guarded"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "class_scales": None if self.class_scales is None else list(self.class_scales),
            "class_biases": None if self.class_biases is None else list(self.class_biases),
            "guard": None if self.guard is None else self.guard.to_dict(),
            "fit": dict(self.fit),
        }

    @classmethod
    def from_dict(
        cls, data: Any, n_classes: int, source: str = "model spec"
    ) -> ProbabilityCalibration:
        """Parse and check the spec's ``calibration`` object; errors name the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: calibration must be an object or null")
        unknown = sorted(set(data) - set(_KNOWN_FIELDS))
        if unknown:
            raise ValueError(f"{source}: calibration has unknown field(s) {', '.join(unknown)}")
        temperature = data.get("temperature", 1.0)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(
                f"{source}: calibration.temperature must be a positive number, not {temperature!r}"
            )
        scales = data.get("class_scales")
        biases = data.get("class_biases")
        if scales is not None:
            scales = _number_list(scales, n_classes, "calibration.class_scales", source)
        if biases is not None:
            if scales is None:
                raise ValueError(f"{source}: calibration.class_biases needs class_scales")
            biases = _number_list(biases, n_classes, "calibration.class_biases", source)
        guard = data.get("guard")
        if guard is not None:
            guard = DecisionGuard.from_dict(guard, n_classes, source)
        fit = data.get("fit") or {}
        if not isinstance(fit, dict):
            raise ValueError(f"{source}: calibration.fit must be an object")
        return cls(
            temperature=float(temperature),
            class_scales=scales,
            class_biases=biases,
            guard=guard,
            fit=dict(fit),
        )
