"""Worklists: the cases a reviewer goes through, from a folder or a CSV.

A folder is read with the case-name rules of ``evaluate`` (:mod:`core.cli.matching`,
nnU-Net ``_0000`` names included). Two layouts are understood:

- sub-folders: images in a folder whose name starts with ``images`` (``images``, ``imagesTs``),
  ground truths in one starting with ``labels`` and existing predictions in one starting with
  ``predictions`` (both optional);
- one flat folder: every image file, with ground truths beside them named with a label tag
  (``case01_seg.nii.gz``, see :data:`core.cli.matching.LABEL_TAGS`).

A CSV has a header row with the columns ``case,image[,label][,prediction]``; relative paths
are taken from the CSV's folder; empty cells mean "none".

The review state is kept in :attr:`Worklist.review_dir`: ``FOLDER/review`` for a folder,
``NAME_review`` beside ``NAME.csv`` for a CSV.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from core.cli.matching import LABEL_TAGS, case_name, expand_files, pair_cases

__all__ = ["REVIEW_FOLDER", "Worklist", "WorklistCase", "read_worklist"]

#: The review folder's name inside a worklist folder.
REVIEW_FOLDER = "review"

_CSV_COLUMNS = ("case", "image", "label", "prediction")


@dataclass(frozen=True)
class WorklistCase:
    """One case: its image, and its ground truth and existing prediction when there are any."""

    name: str
    image: Path
    label: Path | None = None
    prediction: Path | None = None


@dataclass(frozen=True)
class Worklist:
    """The cases of a worklist in review order, and where their review is saved."""

    source: Path
    cases: tuple[WorklistCase, ...]
    review_dir: Path

    @property
    def names(self) -> list[str]:
        """Case names in order."""
        return [case.name for case in self.cases]

    def case(self, name: str) -> WorklistCase:
        """The case called ``name`` (KeyError naming it otherwise)."""
        for case in self.cases:
            if case.name == name:
                return case
        raise KeyError(f"{self.source}: no case named {name!r}")


def read_worklist(path: str | os.PathLike[str]) -> Worklist:
    """Read a worklist folder or CSV (see the module notes for the layouts).

    Parameters
    ----------
    path : path-like
        A folder of cases or a ``.csv`` file.

    Returns
    -------
    Worklist

    Raises
    ------
    ValueError
        Missing path, no cases, a CSV without the ``case`` and ``image`` columns, a repeated
        case name, a file a CSV names that does not exist, or an ambiguous pairing.
    """
    source = Path(path)
    if source.is_dir():
        cases = _cases_of_folder(source)
        review_dir = source / REVIEW_FOLDER
    elif source.is_file():
        if source.suffix.lower() != ".csv":
            raise ValueError(f"{source}: a worklist is a folder of cases or a .csv file")
        cases = _cases_of_csv(source)
        review_dir = source.with_name(f"{source.stem}_review")
    else:
        raise ValueError(f"{source}: no such worklist folder or CSV file")
    if not cases:
        raise ValueError(f"{source}: the worklist has no cases")
    return Worklist(source=source, cases=tuple(cases), review_dir=review_dir)


def _sub_folder(folder: Path, prefix: str) -> Path | None:
    found = sorted(
        child
        for child in folder.iterdir()
        if child.is_dir() and child.name.lower().startswith(prefix)
    )
    if len(found) > 1:
        names = ", ".join(child.name for child in found)
        raise ValueError(f"{folder}: several {prefix} folders ({names}); keep one")
    return found[0] if found else None


def _optional_files(folder: Path | None, what: str) -> list[Path]:
    if folder is None:
        return []
    try:
        return expand_files([folder], what)
    except ValueError:
        return []  # an empty labels/predictions folder: cases without them


def _cases_of_folder(folder: Path) -> list[WorklistCase]:
    images_dir = _sub_folder(folder, "images")
    if images_dir is not None:
        images = expand_files([images_dir], f"{images_dir.name}/")
        labels = _optional_files(_sub_folder(folder, "labels"), "labels/")
    else:
        # One flat folder: files with a label tag are the ground truths of the others.
        files = expand_files([folder], "worklist folder")
        labels = [f for f in files if case_name(f).lower().endswith(LABEL_TAGS)]
        images = [f for f in files if f not in labels]
    predictions = _optional_files(_sub_folder(folder, "predictions"), "predictions/")
    truth = _pairs(images, labels)
    predicted = _pairs(images, predictions)
    names = {image: name for name, image in _case_names(images).items()}
    return [
        WorklistCase(names[image], image, truth.get(image), predicted.get(image))
        for image in sorted(names, key=lambda image: names[image])
    ]


def _case_names(images: list[Path]) -> dict[str, Path]:
    """Case name -> image, with nnU-Net further channels left out (pair_cases' own rules)."""
    pairing = pair_cases(images, [])
    return {case_name(image): image for image in pairing.unmatched_images}


def _pairs(images: list[Path], others: list[Path]) -> dict[Path, Path]:
    if not others:
        return {}
    pairing = pair_cases(images, others)
    return {case.image: case.label for case in pairing.cases}


def _cases_of_csv(table: Path) -> list[WorklistCase]:
    try:
        with open(table, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
            header = [name.strip().lower() for name in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{table}: cannot read the worklist CSV ({error})") from None
    if not rows:
        raise ValueError(f"{table}: the worklist CSV has no rows")
    if "case" not in header or "image" not in header:
        raise ValueError(
            f"{table}: the worklist CSV needs the columns case,image[,label][,prediction]; "
            f"found {','.join(header)}"
        )
    cases, seen = [], set()
    for number, row in enumerate(rows, start=2):
        cells = {(key or "").strip().lower(): (value or "").strip() for key, value in row.items()}
        name = cells.get("case", "")
        if not name:
            raise ValueError(f"{table}: line {number} has no case name")
        if name in seen:
            raise ValueError(f"{table}: line {number} repeats the case {name!r}")
        seen.add(name)
        paths = {}
        for column in _CSV_COLUMNS[1:]:
            value = cells.get(column, "")
            if not value:
                paths[column] = None
                continue
            file = Path(value) if Path(value).is_absolute() else table.parent / value
            if not file.exists():
                raise ValueError(f"{table}: line {number}: {column} {value} does not exist")
            paths[column] = file
        if paths["image"] is None:
            raise ValueError(f"{table}: line {number} ({name}) names no image")
        cases.append(WorklistCase(name, paths["image"], paths["label"], paths["prediction"]))
    return cases
