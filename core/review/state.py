"""The review of a worklist: each case's verdict, comment, time and corrected mask, on disk.

Everything lives in the worklist's review folder (:attr:`core.review.Worklist.review_dir`):

- ``review.json``: statuses, comments, reviewer names, seconds spent, edit Dice and volumes per
  case, and the case the reviewer was on;
- ``corrected/CASE.nii.gz`` (``.png`` for a photograph): each corrected mask, with the image's
  geometry.

Each change is written at once through :mod:`core.atomic_files` (a temporary file renamed over
the old one), so a crash or a ``kill -9`` leaves the state as it was after the last completed
change, never a torn file; reopening the worklist resumes there. A corrected mask is written
before the JSON that names it, so the JSON never points to a mask that is not complete.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.io import Image, read_mask, write_mask
from core.report_files import write_csv_atomic, write_json_atomic
from core.review.worklist import Worklist

__all__ = ["STATE_FILE", "STATUSES", "CaseReview", "ReviewState"]

#: The verdicts a case can have, in the order the Cases panel offers them.
STATUSES = ("unreviewed", "accepted", "rejected", "corrected")
#: The review state's file in the review folder.
STATE_FILE = "review.json"
_CORRECTED = "corrected"
_FORMAT_VERSION = 1


@dataclass
class CaseReview:
    """The review of one case.

    Attributes
    ----------
    status : str
        One of :data:`STATUSES`.
    comment : str
        The reviewer's note.
    reviewer : str
        Who set the last verdict (the name in the settings).
    seconds : float
        Time the case was open, summed over visits.
    updated : str
        ISO 8601 time of the last change, UTC.
    corrected_mask : str or None
        File name of the corrected mask in the ``corrected`` folder.
    edit_dice : float or None
        Mean foreground Dice of the corrected mask against the model's: 1.0 means unchanged.
    volumes_ml : dict
        Class name -> volume (mL; pixels for a photograph) of the final mask (the corrected one,
        else the model's).
    """

    status: str = "unreviewed"
    comment: str = ""
    reviewer: str = ""
    seconds: float = 0.0
    updated: str = ""
    corrected_mask: str | None = None
    edit_dice: float | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseReview:
        """Read one saved case, ignoring keys this version does not know."""
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        review = cls(**known)
        if review.status not in STATUSES:
            review.status = "unreviewed"
        return review


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ReviewState:
    """The review of a worklist, saved after every change.

    Parameters
    ----------
    worklist : core.review.Worklist
        The cases; a saved state in its review folder is loaded (resume).
    """

    def __init__(self, worklist: Worklist) -> None:
        self.worklist = worklist
        self.folder = worklist.review_dir
        self.cases: dict[str, CaseReview] = {name: CaseReview() for name in worklist.names}
        self.current: str | None = None
        # Corrections are saved on a worker while verdicts are saved on the GUI thread.
        self._lock = threading.Lock()
        self._load()

    # --- disk -------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The state file."""
        return self.folder / STATE_FILE

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.path}: cannot read the saved review ({error})") from None
        for name, saved in dict(data.get("cases", {})).items():
            if name in self.cases:  # a case no longer in the worklist is dropped
                self.cases[name] = CaseReview.from_dict(dict(saved))
        current = data.get("current")
        self.current = current if current in self.cases else None

    def save(self) -> Path:
        """Write the state file atomically (done after every change)."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            data = {
                "format": _FORMAT_VERSION,
                "worklist": str(self.worklist.source),
                "current": self.current,
                "cases": {name: asdict(review) for name, review in self.cases.items()},
            }
            return write_json_atomic(data, self.path)

    # --- changes ----------------------------------------------------------------------------
    def set_status(self, name: str, status: str, reviewer: str = "") -> None:
        """Record a verdict (:data:`STATUSES`) and save."""
        if status not in STATUSES:
            raise ValueError(f"unknown review status {status!r}: use one of {', '.join(STATUSES)}")
        review = self.cases[name]
        review.status = status
        review.reviewer = reviewer or review.reviewer
        review.updated = _now()
        self.save()

    def set_comment(self, name: str, comment: str) -> None:
        """Record the reviewer's comment and save."""
        review = self.cases[name]
        review.comment = comment
        review.updated = _now()
        self.save()

    def add_seconds(self, name: str, seconds: float) -> None:
        """Add time spent on a case and save."""
        self.cases[name].seconds += max(0.0, float(seconds))
        self.save()

    def set_current(self, name: str) -> None:
        """Remember the case on screen (where a reopened worklist resumes) and save."""
        self.case_review(name)
        self.current = name
        self.save()

    def set_volumes(self, name: str, volumes: dict[str, float]) -> None:
        """Record the final mask's class volumes (without saving: the next change does)."""
        self.cases[name].volumes_ml = {str(k): float(v) for k, v in volumes.items()}

    def case_review(self, name: str) -> CaseReview:
        """The review of ``name`` (KeyError naming the case otherwise)."""
        if name not in self.cases:
            raise KeyError(f"{self.worklist.source}: no case named {name!r}")
        return self.cases[name]

    # --- corrected masks --------------------------------------------------------------------
    def corrected_path(self, name: str, image: Image) -> Path:
        """Where the corrected mask of ``name`` is written."""
        suffix = ".png" if image.is_natural else ".nii.gz"
        return self.folder / _CORRECTED / f"{name}{suffix}"

    def save_corrected(
        self,
        name: str,
        mask: np.ndarray,
        image: Image,
        *,
        edit_dice: float | None,
        volumes: dict[str, float],
        reviewer: str = "",
    ) -> Path:
        """Write a corrected mask (atomically), mark the case corrected and save the state.

        Parameters
        ----------
        name : str
            The case.
        mask : numpy.ndarray
            The corrected label map, shape ``image.shape3``.
        image : core.io.Image
            The case's image (the mask is written with its geometry).
        edit_dice : float or None
            Mean foreground Dice of ``mask`` against the model's mask.
        volumes : dict
            Class name -> volume of ``mask``.
        reviewer : str
            The reviewer's name.
        """
        target = self.corrected_path(name, image)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_mask(mask, target, reference=image)
        review = self.cases[name]
        review.corrected_mask = target.name
        review.edit_dice = None if edit_dice is None else float(edit_dice)
        review.status = "corrected"
        review.reviewer = reviewer or review.reviewer
        review.updated = _now()
        self.set_volumes(name, volumes)
        self.save()
        return target

    def load_corrected(self, name: str, image: Image) -> np.ndarray | None:
        """The saved corrected mask of ``name`` on ``image``'s grid, or None when there is none."""
        review = self.cases[name]
        if review.corrected_mask is None:
            return None
        path = self.folder / _CORRECTED / review.corrected_mask
        if not path.exists():
            return None
        return read_mask(path, reference=image).array

    # --- summaries --------------------------------------------------------------------------
    def progress(self) -> tuple[int, int]:
        """``(reviewed, total)``: cases with a verdict, and all cases."""
        reviewed = sum(review.status != "unreviewed" for review in self.cases.values())
        return reviewed, len(self.cases)

    def next_case(self, name: str | None, step: int = 1, *, unreviewed: bool = False) -> str | None:
        """The case ``step`` places after ``name`` (before, for a negative step), or None.

        With ``unreviewed`` the next case without a verdict after ``name`` (wrapping round to
        the start), or None when every case has one.
        """
        names = self.worklist.names
        start = names.index(name) if name in names else -1
        if unreviewed:
            order = names[start + 1 :] + names[: start + 1]
            return next((n for n in order if self.cases[n].status == "unreviewed"), None)
        index = start + step
        return names[index] if 0 <= index < len(names) else None

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per case: case, status, comment, reviewer, seconds, edit Dice, volumes."""
        classes: list[str] = []
        for review in self.cases.values():
            classes.extend(c for c in review.volumes_ml if c not in classes)
        rows = []
        for case in self.worklist.cases:
            review = self.cases[case.name]
            row: dict[str, Any] = {
                "case": case.name,
                "status": review.status,
                "comment": review.comment,
                "reviewer": review.reviewer,
                "seconds": round(review.seconds, 1),
                "edit_dice": review.edit_dice,
                "corrected_mask": (
                    str(self.folder / _CORRECTED / review.corrected_mask)
                    if review.corrected_mask
                    else None
                ),
                "image": str(case.image),
            }
            for name in classes:
                row[f"{name} ml"] = review.volumes_ml.get(name)
            rows.append(row)
        return rows

    def export(self, path: str | os.PathLike[str]) -> Path:
        """Write the review as CSV, or as JSON when ``path`` ends in ``.json`` (atomic)."""
        rows = self.rows()
        if str(path).lower().endswith(".json"):
            reviewed, total = self.progress()
            data = {
                "worklist": str(self.worklist.source),
                "reviewed": reviewed,
                "total": total,
                "cases": rows,
            }
            return write_json_atomic(data, path)
        columns = list(rows[0]) if rows else ["case"]
        return write_csv_atomic(rows, columns, path)
