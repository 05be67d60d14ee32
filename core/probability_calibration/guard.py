"""The decision guard: per class, RankSEG-RMA or argmax, and RMA's pruning, as learned.

RankSEG-RMA maximises the expected Dice under the model's probabilities; where those are off
(a long tail of small lesion probabilities over a large volume), it can lower a class's Dice a
lot. The guard is learned on labelled calibration cases: for every class, the pruning level
that gave RMA its best mean Dice, and RMA only where that beats argmax's mean Dice there.

"Argmax" is the model's own argmax, before calibration. Temperature scaling never moves it;
vector scaling can (its per-class biases shift the class boundaries), and on volumes unlike the
fitting cases that shift can cost a small class many points (a 512x512x300 CT phantom: the
lesion fell 2.6-8.9 points under a vector-scaled argmax while RMA gained 15 on the kidney). So
a class the guard keeps on argmax keeps exactly the uncalibrated model's pixels, and callers of
a vector-scaled model pass that decision along (:func:`needs_model_decision`).

Combining the two maps (softmax models): a class ruled "argmax" gets exactly argmax's pixels;
the other classes get RMA's pixels outside those; a pixel RMA gave to an argmax-ruled class
that argmax did not goes to argmax's label. Sigmoid models take each class's mask from its rule.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from core.jobs import CancelToken
from core.metrics import dice_score, iou_score
from core.probability_calibration.settings import DecisionGuard, ProbabilityCalibration
from core.seg import argmax_decision, rankseg_rma

__all__ = [
    "PRUNING_CANDIDATES",
    "RARER_THAN_CALIBRATION",
    "class_fractions",
    "guard_for_case",
    "GuardTally",
    "guarded_decision",
    "model_argmax",
    "needs_model_decision",
]

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


def model_argmax(probs: np.ndarray, *, multilabel: bool = False) -> np.ndarray:
    """The compact argmax of one case's probabilities (C, *spatial), kept for the guard.

    Labels in the smallest unsigned type (uint8 up to 255 classes), or bool masks
    (C, *spatial) for a sigmoid model.
    """
    out = argmax_decision(probs[None], multilabel=multilabel)[0]
    if multilabel:
        return out
    return out.astype(np.uint8 if probs.shape[0] <= 255 else np.uint16)


#: A case where an RMA-ruled class takes less than this fraction of the smallest share it had
#: on the calibration cases is outside what the guard learned: the class falls back to argmax.
#: The guard's evidence does not carry over there. On the CT phantoms, a guard learned on
#: 160x160x48 volumes (lesion 3.8e-4 to 9.8e-4 of the voxels) still let RMA cost the lesion
#: 5.7-6.6 Dice points on a 512x512x300 one (1.4e-5: 27 times rarer), while on 256x256x150
#: (1.1e-4: 3.4 times rarer) it gained.
RARER_THAN_CALIBRATION = 1 / 10


def class_fractions(decision: np.ndarray, n_classes: int, multilabel: bool = False) -> np.ndarray:
    """Share of the pixels each class takes in one case's decision (labels, or (C, ...) masks)."""
    if multilabel:
        masks = np.asarray(decision).reshape(n_classes, -1)
        return masks.sum(axis=1) / max(masks.shape[1], 1)
    labels = np.asarray(decision).reshape(-1)
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    return counts / max(labels.size, 1)


def guard_for_case(
    guard: DecisionGuard,
    model_decision: np.ndarray,
    *,
    multilabel: bool = False,
    class_names: list[str] | None = None,
) -> tuple[DecisionGuard, list[str]]:
    """The guard to use on one case, and what it changed, in words.

    An RMA-ruled class that the model's argmax makes far rarer in this case
    (:data:`RARER_THAN_CALIBRATION`) than on every calibration case is put on argmax: RMA
    beat argmax where the class was common, which says nothing about a case where the tail
    of its small probabilities outweighs its true pixels many times over.

    Parameters
    ----------
    guard : DecisionGuard
    model_decision : numpy.ndarray
        The model's own argmax of the case (labels (*spatial), or masks (C, *spatial)).
    multilabel : bool
    class_names : list of str, optional
        For the messages (class indices otherwise).
    """
    if guard.min_fraction is None:
        return guard, []
    n = len(guard.rules)
    fractions = class_fractions(model_decision, n, multilabel)
    rules, notes = list(guard.rules), []
    first = 0 if multilabel else 1  # the softmax background takes what the others leave
    for c in range(first, n):
        seen = guard.min_fraction[c]
        if rules[c] != "rma" or seen <= 0 or fractions[c] >= seen * RARER_THAN_CALIBRATION:
            continue
        rules[c] = "argmax"
        name = class_names[c] if class_names else f"class {c}"
        notes.append(
            f"{name} takes {fractions[c]:.2g} of this case's pixels, under a tenth of the "
            f"smallest share on the calibration cases ({seen:.2g}): the guard kept it on argmax "
            "instead of RankSEG-RMA; calibrate on cases like this one to use RMA here"
        )
    if not notes:
        return guard, []
    return replace(guard, rules=tuple(rules)), notes


def needs_model_decision(calibration: ProbabilityCalibration | None) -> bool:
    """Whether the guarded rule of a model with ``calibration`` needs the uncalibrated argmax.

    Only vector scaling moves the argmax; with a single temperature the calibrated
    probabilities' argmax is the model's own, so nothing extra has to be kept. Any class can
    be on argmax in a case, even where the learned rules are all RMA (:func:`guard_for_case`).
    """
    return calibration is not None and calibration.is_vector and calibration.guard is not None


def guarded_decision(
    batch: np.ndarray,
    guard: DecisionGuard,
    *,
    multilabel: bool = False,
    model_decision: np.ndarray | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The guarded decision of probabilities ``batch`` (B, C, *spatial).

    Parameters
    ----------
    batch : numpy.ndarray
        Calibrated probabilities.
    guard : DecisionGuard
    multilabel : bool
        Sigmoid model.
    model_decision : numpy.ndarray, optional
        The uncalibrated model's argmax of the same batch (labels (B, *spatial), or bool masks
        (B, C, *spatial) when ``multilabel``): what argmax-ruled classes keep. None: the argmax
        of ``batch`` (the same thing unless the calibration is vector scaling).
    cancel : CancelToken, optional

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
    if model_decision is None:
        argmax_out = argmax_decision(batch, multilabel=multilabel)
    else:
        expected = batch.shape if multilabel else batch.shape[:1] + batch.shape[2:]
        if tuple(model_decision.shape) != tuple(expected):
            raise ValueError(
                f"the model's own decision has shape {tuple(model_decision.shape)}; the "
                f"probabilities need {tuple(expected)}"
            )
        argmax_out = np.asarray(model_decision)
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
        self.argmax_cases: list[np.ndarray] = []  # (C,) per case
        self.rma_cases: list[np.ndarray] = []  # (pruning levels, C) per case
        self.fraction_cases: list[np.ndarray] = []  # (C,) share of the argmax per case

    @property
    def cases(self) -> int:
        return len(self.argmax_cases)

    @property
    def argmax(self) -> np.ndarray:
        """Argmax's score per class, summed over the cases."""
        return np.sum(self.argmax_cases, axis=0) if self.cases else np.zeros(self.n_classes)

    @property
    def rma(self) -> np.ndarray:
        """RMA's score per pruning level and class, summed over the cases."""
        shape = (len(PRUNING_CANDIDATES), self.n_classes)
        return np.sum(self.rma_cases, axis=0) if self.cases else np.zeros(shape)

    def add(
        self,
        probs: np.ndarray,
        truth: np.ndarray,
        *,
        model_decision: np.ndarray | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Score one calibration case.

        Parameters
        ----------
        probs : numpy.ndarray
            Its calibrated probabilities (C, *spatial).
        truth : numpy.ndarray
            Its labels (*spatial).
        model_decision : numpy.ndarray, optional
            The uncalibrated model's argmax (labels, or (C, *spatial) masks for a sigmoid
            model); None: the argmax of ``probs`` (the same under a single temperature).
        cancel : CancelToken, optional
        """
        batch = probs[None]
        truth = truth[None].astype(np.int64)
        args = (truth, self.n_classes, self.multilabel, self.metric)
        if model_decision is None:
            model_decision = model_argmax(probs, multilabel=self.multilabel)
        model_decision = np.asarray(model_decision)
        argmax = _scores(model_decision[None], *args)
        self.fraction_cases.append(class_fractions(model_decision, self.n_classes, self.multilabel))
        rma = np.zeros((len(PRUNING_CANDIDATES), self.n_classes))
        for row, pruning in enumerate(PRUNING_CANDIDATES):
            decision = rankseg_rma(
                batch,
                metric=self.metric,
                multilabel=self.multilabel,
                pruning_prob=pruning,
                cancel=cancel,
            )
            rma[row] = _scores(decision, *args)
        self.argmax_cases.append(argmax)
        self.rma_cases.append(rma)

    def learn(self) -> DecisionGuard:
        """Per class the pruning level with RMA's best mean score, and RMA only where, at that
        level, it beats argmax on the mean *and* on more cases than it loses.

        The second condition keeps one large gain on one case from deciding alone: on a few
        calibration cases the mean is noisy, and choosing the best of several levels already
        flatters RMA.
        """
        if self.cases == 0:
            raise ValueError("no calibration case to learn the decision guard from")
        argmax = np.asarray(self.argmax_cases)  # (N, C)
        rma = np.asarray(self.rma_cases)  # (N, P, C)
        best_row = np.argmax(rma.mean(axis=0), axis=0)  # first maximum: the default wins ties
        gains = rma[:, best_row, np.arange(self.n_classes)] - argmax  # (N, C)
        wins, losses = (gains > 0).sum(axis=0), (gains < 0).sum(axis=0)
        better = (gains.mean(axis=0) > 0) & (wins > losses)
        rules = ["rma" if b else "argmax" for b in better]
        if not self.multilabel:
            rules[0] = "rma"  # the background takes what the other classes leave
        pruning = tuple(float(PRUNING_CANDIDATES[r]) for r in best_row)
        min_fraction = None  # unknown unless every case recorded its shares
        if len(self.fraction_cases) == self.cases:
            min_fraction = tuple(float(f) for f in np.min(self.fraction_cases, axis=0))
        return DecisionGuard(
            rules=tuple(rules), pruning=pruning, metric=self.metric, min_fraction=min_fraction
        )

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
