"""Probability calibration: measure it, fit a correction, and guard the decision rule.

Not to be confused with :mod:`core.models.calibration` (the sample inputs that post-training
quantization calibrates on). Here calibration means that a class predicted with probability p
is right a fraction p of the time, which RankSEG-RMA assumes.
"""

from core.probability_calibration.fitting import PixelSample, fit_scaling, sample_pixels
from core.probability_calibration.guard import (
    PRUNING_CANDIDATES,
    RARER_THAN_CALIBRATION,
    GuardTally,
    guard_for_case,
    guarded_decision,
    model_argmax,
    needs_model_decision,
)
from core.probability_calibration.measure import (
    TAIL_PROBABILITY,
    ClassCalibration,
    ReliabilityTally,
)
from core.probability_calibration.scaling import calibrate_probabilities
from core.probability_calibration.settings import (
    GUARD_RULES,
    DecisionGuard,
    ProbabilityCalibration,
)

__all__ = [
    "GUARD_RULES",
    "PRUNING_CANDIDATES",
    "RARER_THAN_CALIBRATION",
    "TAIL_PROBABILITY",
    "ClassCalibration",
    "DecisionGuard",
    "GuardTally",
    "PixelSample",
    "ProbabilityCalibration",
    "ReliabilityTally",
    "calibrate_probabilities",
    "fit_scaling",
    "guard_for_case",
    "guarded_decision",
    "model_argmax",
    "needs_model_decision",
    "sample_pixels",
]
