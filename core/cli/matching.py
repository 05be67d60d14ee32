"""Pairing images with their label masks by file name, for ``evaluate``.

An image ``case01.nii.gz`` pairs with a label file of the same case name, compared without the
image ending: ``case01.nii.gz``, ``case01.nrrd``, or the same name with one of the usual label
tags (``case01_label.nii.gz``, ``case01_seg.mha``, ...). Image names with an nnU-Net channel tag
(``case01_0000.nii.gz``) pair with ``case01``. Anything ambiguous is an error rather than a guess.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.io.reader import IMAGE_SUFFIXES, suffix_of

__all__ = ["LABEL_TAGS", "Case", "Pairing", "case_name", "expand_files", "pair_cases"]

#: Name endings that mark a label file of a case (checked after removing the file ending).
LABEL_TAGS = ("_label", "_labels", "_seg", "_segmentation", "_gt", "_mask")

_FILE_SUFFIXES = tuple(s for group in IMAGE_SUFFIXES.values() for s in group if s)
_CHANNEL_TAG = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class Case:
    """One image with its label file."""

    name: str
    image: Path
    label: Path


@dataclass
class Pairing:
    """The cases found, and the files that found no partner."""

    cases: list[Case]
    unmatched_images: list[Path] = field(default_factory=list)
    unmatched_labels: list[Path] = field(default_factory=list)


def case_name(path: Path) -> str:
    """The file name without its image ending (``.nii.gz`` counted whole)."""
    suffix = suffix_of(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def expand_files(entries: Iterable[str | os.PathLike[str]], what: str) -> list[Path]:
    """Files named directly, plus the image files directly inside named folders, sorted.

    Parameters
    ----------
    entries : iterable of path-like
        Files and folders (folders are not searched recursively; hidden files are skipped).
    what : str
        What the entries are ("--images"), for error messages.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    ValueError
        A missing entry, or no image file at all.
    """
    files: list[Path] = []
    for entry in entries:
        path = Path(entry)
        if path.is_dir():
            files.extend(
                sorted(
                    child
                    for child in path.iterdir()
                    if child.is_file()
                    and not child.name.startswith(".")
                    and suffix_of(child) in _FILE_SUFFIXES
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder ({what})")
    if not files:
        raise ValueError(f"{what}: no image files found in {', '.join(map(str, entries))}")
    return files


def _label_key(path: Path) -> str:
    name = case_name(path)
    for tag in LABEL_TAGS:
        if name.lower().endswith(tag) and len(name) > len(tag):
            return name[: -len(tag)]
    return name


def pair_cases(images: list[Path], labels: list[Path]) -> Pairing:
    """Pair image files with label files by case name.

    Parameters
    ----------
    images, labels : list of pathlib.Path

    Returns
    -------
    Pairing
        Cases sorted by name, plus the unpaired images and labels.

    Raises
    ------
    ValueError
        Two images with the same case name, two labels claiming the same case, or a file
        paired with itself.
    """
    by_name: dict[str, Path] = {}
    names = {case_name(image) for image in images}
    for image in images:
        name = case_name(image)
        channel = _CHANNEL_TAG.search(name)
        if channel and channel.group(0) != "_0000" and f"{name[: channel.start()]}_0000" in names:
            continue  # a further channel of a multi-channel case: read beside its _0000 file
        if name in by_name:
            raise ValueError(f"{image}: same case name {name!r} as {by_name[name]}")
        by_name[name] = image
    label_by_key: dict[str, Path] = {}
    for label in labels:
        key = _label_key(label)
        if key in label_by_key:
            raise ValueError(f"{label}: labels the same case {key!r} as {label_by_key[key]}")
        label_by_key[key] = label
    cases, unmatched = [], []
    used: set[str] = set()
    for name, image in sorted(by_name.items()):
        keys = [name]
        if _CHANNEL_TAG.search(name):
            keys.append(_CHANNEL_TAG.sub("", name))
        key = next((k for k in keys if k in label_by_key and k not in used), None)
        if key is None:
            unmatched.append(image)
            continue
        if label_by_key[key].resolve() == image.resolve():
            raise ValueError(f"{image}: given both as an image and as its own label")
        used.add(key)
        cases.append(Case(name=name, image=image, label=label_by_key[key]))
    leftover = [label for key, label in sorted(label_by_key.items()) if key not in used]
    return Pairing(cases=cases, unmatched_images=unmatched, unmatched_labels=leftover)
