"""Loading a model for a command, with the error phrased for the command line."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["load_cli_model"]


def load_cli_model(
    path: str | os.PathLike[str],
    *,
    trust: bool,
    folds: Sequence[str] | None = None,
    checkpoint: str | None = None,
    mirroring: bool = True,
    backend: str | None = None,
) -> Any:
    """:func:`core.models.load_model`, with a refused pickle explained in terms of ``--trust``.

    Parameters
    ----------
    path : path-like
        Model folder or file as given on the command line.
    trust : bool
        The ``--trust`` flag.
    folds, checkpoint, mirroring
        ``--folds``, ``--checkpoint`` and ``--no-mirroring`` (nnU-Net model folders).
    backend : {'torch', 'onnxruntime'} or None
        ``--backend``: the model ready to run there (None: its own).

    Returns
    -------
    core.models.LoadedModel

    Raises
    ------
    ValueError
        As ``load_model``; the message always names ``path``, and a pickled module refused for
        lack of trust says to pass ``--trust`` (the library's message speaks of ``trust=True``).
    """
    from core.models import load_model

    try:
        model = load_model(
            path, trust=trust, folds=folds, checkpoint=checkpoint, mirroring=mirroring
        )
        if backend is not None:
            from core.deploy.onnx_runtime import with_backend

            model = with_backend(model, backend)
        return model
    except ValueError as error:
        message = str(error)
        if not trust and "trust=True" in message:
            message = message.replace("pass trust=True", "pass --trust")
            message = message.replace("trust=True", "--trust")
        if str(path) not in message and str(Path(path)) not in message:
            message = f"{path}: {message}"
        raise ValueError(message) from None
