"""Means over cases of the per-case rows of an ``evaluate`` report."""

from __future__ import annotations

from typing import Any

__all__ = ["mean_rows"]

_METRICS = ("dice", "iou", "expected_dice", "volume_ml", "volume_ml_gt")


def _mean(values: list[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and v == v]  # v == v drops NaN
    return sum(finite) / len(finite) if finite else None


def mean_rows(per_case: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over cases per (model, decision, class), plus a foreground row per pair.

    Parameters
    ----------
    per_case : list of dict
        Records with the :data:`CASE_COLUMNS` keys.

    Returns
    -------
    list of dict
        model, decision, label, class, dice, iou, expected_dice, volume_ml, volume_ml_gt
        (means; None where no case has a value) and cases (count), in first-seen order. After
        the classes of each (model, decision) comes a row with label None and class
        ``"mean foreground"``: the mean over cases of each case's mean over labels 1 and up.
    """
    groups: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in per_case:
        pair = groups.setdefault((row["model"], row["decision"]), {})
        pair.setdefault(row["label"], []).append(row)
    means = []
    for (model, decision), by_label in groups.items():
        for label, rows in by_label.items():
            record = {
                "model": model,
                "backend": rows[0].get("backend"),
                "decision": decision,
                "label": label,
                "class": rows[0]["class"],
            }
            record.update({key: _mean([r[key] for r in rows]) for key in _METRICS})
            record["cases"] = len(rows)
            record["rule"] = rows[0].get("rule")  # the guarded rule's per-class choice
            means.append(record)
        case_means: dict[str, dict[str, list[float | None]]] = {}
        for label, rows in by_label.items():
            if label == 0:
                continue
            for r in rows:
                per = case_means.setdefault(r["case"], {"dice": [], "iou": [], "expected_dice": []})
                for key in per:
                    per[key].append(r[key])
        record = {
            "model": model,
            "backend": next(iter(by_label.values()))[0].get("backend"),
            "decision": decision,
            "label": None,
            "class": "mean foreground",
        }
        for key in ("dice", "iou", "expected_dice"):
            record[key] = _mean([_mean(per[key]) for per in case_means.values()])
        record["cases"] = len(case_means)
        means.append(record)
    return means
