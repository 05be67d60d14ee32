"""Guarding inputs: an output path of a command may never be (or hold) one of its inputs.

Commands check this right after parsing, before any work, and raise
:class:`core.cli.errors.UsageError` (exit 2): writing a mask over the CT it came from, or a
quantized model over its float base, is an argument mistake, and the input must survive it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from core.atomic_files import output_target, same_file
from core.cli.errors import UsageError

__all__ = ["check_outputs", "is_inside"]


def is_inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies somewhere below ``folder``."""
    return path.resolve().is_relative_to(folder.resolve()) and not same_file(path, folder)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str]],
    *,
    folder_outputs: Iterable[str] = (),
) -> None:
    """Refuse outputs that are not regular files, equal an input or each other, or hold an input.

    An existing device, FIFO, socket, system path (a link to one included) is refused; a link
    to a regular file is accepted, and the writers replace the file it points to.

    Parameters
    ----------
    outputs : mapping of option name to path or None
        For example ``{"--out": "mask.nii.gz", "--report": None}``; None entries are skipped.
    inputs : iterable of path-like
        Every file or folder the command reads.
    folder_outputs : iterable of str
        Option names whose output is a folder the command writes into (a quantized model):
        an input inside that folder could be overwritten too, so it is refused as well.

    Raises
    ------
    UsageError
        Naming the option, the path and the problem (or the input it collides with).
    """
    given = {option: Path(path) for option, path in outputs.items() if path is not None}
    folders = set(folder_outputs)
    for option, target in given.items():
        try:
            output_target(target, folder=option in folders)
        except ValueError as error:
            raise UsageError(f"{option} {error}") from None
    sources = [Path(p) for p in inputs]
    for option, target in given.items():
        for source in sources:
            if same_file(target, source):
                raise UsageError(
                    f"{option} {target} is an input of this command; refusing to overwrite it"
                )
            if option in folders and is_inside(source, target):
                raise UsageError(
                    f"{option} {target} holds the input {source}; refusing to write into it"
                )
            if source.is_dir() and option not in folders and is_inside(target, source):
                # A file written into an input folder (a DICOM series) would join that input.
                raise UsageError(
                    f"{option} {target} is inside the input folder {source}; write it elsewhere"
                )
    names = list(given)
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            if same_file(given[first], given[second]):
                raise UsageError(f"{first} and {second} name the same file {given[first]}")
