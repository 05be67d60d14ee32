"""Reading pickled checkpoints (``.pth``/``.pt``) without running code they may carry.

A PyTorch checkpoint is a pickle: ``torch.load(..., weights_only=False)`` rebuilds whatever
objects its author chose, which can run any code. :func:`read_checkpoint` uses torch's
``weights_only`` unpickler, which rebuilds only tensors, plain containers, numbers, strings and
``torch.device`` (what nnU-Net and MONAI checkpoints hold); anything more is refused unless the
user trusts the file.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from core.models.trust import UntrustedCodeError

__all__ = ["read_checkpoint"]


def _refused_global(error: pickle.UnpicklingError) -> str:
    """`` (it names posix.system)``: the object torch's safe unpickler stopped at, if it says."""
    match = re.search(r"unsupported GLOBAL (\S+)", str(error))
    return f" (it names {match.group(1)})" if match else ""


def read_checkpoint(path: Path, *, trust: bool) -> Any:
    """Unpickle a checkpoint on the CPU, refusing objects beyond plain data without ``trust``.

    Parameters
    ----------
    path : pathlib.Path
        The ``.pth``/``.pt`` file.
    trust : bool
        Allow the full unpickler (runs code from the file) when the safe one refuses.

    Returns
    -------
    object
        What the file holds (usually a dict of tensors and plain values).

    Raises
    ------
    UntrustedCodeError
        The file needs the full unpickler and ``trust`` is False.
    ValueError
        The file is missing, truncated or not a PyTorch file; the message names it.
    """
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust:
            raise UntrustedCodeError(
                f"{path}: the checkpoint holds Python objects beyond weights and plain data"
                f"{_refused_global(error)}, and loading it would run code from the file; pass "
                "trust=True only if you trust where the file came from"
            ) from None
    except FileNotFoundError:
        raise ValueError(f"{path}: no such checkpoint file") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - a trusted pickle can raise anything
        raise ValueError(f"{path}: the trusted checkpoint could not be loaded ({error})") from None
