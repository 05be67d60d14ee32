"""Scoring models and decision rules over labelled cases, one case at a time.

:mod:`core.evaluation.case` scores one case (the unit of work of every executor);
:mod:`core.evaluation.run` drives a whole run on the local process or on a Ray cluster
(:mod:`core.cluster`) and keeps the report, written after every case, resumable.
"""

from core.evaluation.case import CaseOutcome, EvaluationSettings, evaluate_case
from core.evaluation.run import EvaluationRun, RunProgress, evaluate_cases

__all__ = [
    "CaseOutcome",
    "EvaluationRun",
    "EvaluationSettings",
    "RunProgress",
    "evaluate_case",
    "evaluate_cases",
]
