"""The decision guard: per class, RankSEG-RMA or argmax, and RMA's pruning, as learned.

RankSEG-RMA maximises the expected Dice under the model's probabilities; where those are off
(a long tail of small lesion probabilities over a large volume), it can lower a class's Dice a
lot. The guard is learned on labelled calibration cases: for every class, the pruning level
that gave RMA its best mean Dice, and RMA only where that beats argmax's mean Dice there.

Combining the two maps (softmax models): a class ruled "argmax" gets exactly argmax's pixels;
the other classes get RMA's pixels outside those; a pixel RMA gave to an argmax-ruled class
that argmax did not goes to argmax's label. Sigmoid models take each class's mask from its rule.
"""

from __future__ import annotations

import numpy as np

from core.jobs import CancelToken
from core.metrics import dice_score, iou_score
from core.probability_calibration.settings import DecisionGuard
from core.seg import argmax_decision, rankseg_rma

__all__ = ["PRUNING_CANDIDATES", "GuardTally", "guarded_decision"]

#: Pruning levels tried per class; the first (RankSEG-RMA's default) wins ties.
PRUNING_CANDIDATES: tuple[float, ...] = (0.5, 0.1, 0.3, 0.7, 0.9)


def _combine(argmax_out, rma_out, rules: tuple[str, ...], multilabel: bool):
    """Merge argmax and RMA decisions of a batch by the per-class rules (see module notes)."""
    by_argmax = np.array([rule == "argmax" for rule in rules])
    if multilabel:
        out = rma_out.copy()
        out[:, by_argmax] = argmax_out[:, by_argmax]
        return out
    if not by_argmax.any():
        return rma_out
    out = rma_out.copy()
    argmax_owned = np.isin(argmax_out, np.flatnonzero(by_argmax))
    lost = np.isin(out, np.flatnonzero(by_argmax)) & ~argmax_owned
    out[lost] = argmax_out[lost]
    out[argmax_owned] = argmax_out[argmax_owned]
    return out


def guarded_decision(
    batch: np.ndarray,
    guard: DecisionGuard,
    *,
    multilabel: bool = False,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The guarded decision of probabilities ``batch`` (B, C, *spatial).

    Returns
    -------
    decision : int64 labels (B, *spatial), or bool masks (B, C, *spatial) when ``multilabel``
    thresholds : float64 (B, C) RMA thresholds t* (NaN for pruned and argmax-ruled classes)
    """
    if len(guard.rules) != batch.shape[1]:
        raise ValueError(
            f"the decision guard has {len(guard.rules)} classes but the probabilities have "
            f"{batch.shape[1]}"
        )
    rma_out, info = rankseg_rma(
        batch,
        metric=guard.metric,
        multilabel=multilabel,
        pruning_prob=list(guard.pruning),
        return_info=True,
        info_expected=False,
        cancel=cancel,
    )
    argmax_out = argmax_decision(batch, multilabel=multilabel)
    thresholds = np.asarray(info.threshold, dtype=np.float64).copy()
    thresholds[:, [rule == "argmax" for rule in guard.rules]] = np.nan
    return _combine(argmax_out, rma_out, guard.rules, multilabel), thresholds


def _scores(decision, truth, n_classes: int, multilabel: bool, metric: str) -> np.ndarray:
    if multilabel:
        truth = np.stack([truth == c for c in range(n_classes)], axis=1)
    score = dice_score if metric == "dice" else iou_score
    return np.asarray(score(decision, truth, num_classes=n_classes))[0]


class GuardTally:
    """Per-class scores of argmax and of RMA at each pruning level, summed over cases.

    Parameters
    ----------
    n_classes : int
    multilabel : bool
        Sigmoid model (independent masks per class).
    metric : {'dice', 'iou'}
        RMA's objective, and the score the choice compares.
    """

    def __init__(self, n_classes: int, *, multilabel: bool = False, metric: str = "dice") -> None:
        self.n_classes = n_classes
        self.multilabel = multilabel
        self.metric = metric
        self.argmax = np.zeros(n_classes)
        self.rma = np.zeros((len(PRUNING_CANDIDATES), n_classes))
        self.cases = 0

    def add(
        self, probs: np.ndarray, truth: np.ndarray, *, cancel: CancelToken | None = None
    ) -> None:
        """Score one calibration case (its calibrated probabilities (C, *spatial) and labels)."""
        batch = probs[None]
        truth = truth[None].astype(np.int64)
        args = (truth, self.n_classes, self.multilabel, self.metric)
        self.argmax += _scores(argmax_decision(batch, multilabel=self.multilabel), *args)
        for row, pruning in enumerate(PRUNING_CANDIDATES):
            decision = rankseg_rma(
                batch,
                metric=self.metric,
                multilabel=self.multilabel,
                pruning_prob=pruning,
                cancel=cancel,
            )
            self.rma[row] += _scores(decision, *args)
        self.cases += 1

    def learn(self) -> DecisionGuard:
        """Per class the best pruning level, and RMA only where it beats argmax's mean score."""
        if self.cases == 0:
            raise ValueError("no calibration case to learn the decision guard from")
        best_row = np.argmax(self.rma, axis=0)  # first maximum: the default level wins ties
        best = self.rma[best_row, np.arange(self.n_classes)]
        rules = ["rma" if b > a else "argmax" for b, a in zip(best, self.argmax, strict=True)]
        if not self.multilabel:
            rules[0] = "rma"  # the background takes what the other classes leave
        pruning = tuple(float(PRUNING_CANDIDATES[r]) for r in best_row)
        return DecisionGuard(rules=tuple(rules), pruning=pruning, metric=self.metric)

    def summary(self) -> dict[str, list[float]]:
        """Mean scores per class on the calibration cases (for the report)."""
        n = max(self.cases, 1)
        return {
            "argmax": [float(v) / n for v in self.argmax],
            **{
                f"rma pruning {p:g}": [float(v) / n for v in row]
                for p, row in zip(PRUNING_CANDIDATES, self.rma, strict=True)
            },
        }
