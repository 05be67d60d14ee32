"""Exit codes and the one place where a command's exceptions become a one-line message.

Every command's ``run`` is wrapped by :func:`handle_errors`: a bad argument found after parsing
(:class:`UsageError`) exits with 2 like argparse's own errors, any other failure exits with 1.
Either way stderr gets one line ``main.py COMMAND: error: ...`` and no traceback unless the
user passed ``--debug``, because a reviewer running a script wants the file and the problem, not
forty lines of torch internals.
"""

from __future__ import annotations

import argparse
import functools
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import TextIO

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "describe_error",
    "handle_errors",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C (128 + SIGINT)

CommandRun = Callable[[argparse.Namespace], int]


class UsageError(ValueError):
    """An argument that parsed but makes no sense (an --out equal to an input, ...): exit 2."""


def describe_error(error: BaseException) -> str:
    """One line naming the problem: the message, or the file and reason for OS errors.

    Parameters
    ----------
    error : BaseException
        The exception a command raised.

    Returns
    -------
    str
        The message with line breaks folded into ``"; "`` (never empty).
    """
    if isinstance(error, OSError) and error.filename is not None:
        reason = error.strerror or str(error)
        message = f"{error.filename}: {reason}"
    else:
        message = str(error).strip()
        if isinstance(error, KeyError | IndexError) and len(error.args) == 1:
            message = repr(error.args[0])  # str(KeyError('x')) keeps quotes anyway
    if not message:
        message = type(error).__name__
    elif not isinstance(error, ValueError | OSError):
        # A ValueError is the project's "bad input" with a sentence; others need their type.
        message = f"{type(error).__name__}: {message}"
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _one_line(message: Warning | str) -> str:
    return " ".join(str(message).split())


def _print_error(prog: str, message: str, stream: TextIO) -> None:
    print(f"{prog}: error: {message}", file=stream, flush=True)


def handle_errors(name: str) -> Callable[[CommandRun], CommandRun]:
    """Decorate a command's ``run(args)`` so it returns an exit code instead of raising.

    Parameters
    ----------
    name : str
        The command name, used in the message prefix (``main.py segment: error: ...``).

    Returns
    -------
    callable
        A decorator; the wrapped function returns :data:`EXIT_OK` (or the command's own code),
        :data:`EXIT_USAGE` for :class:`UsageError`, :data:`EXIT_INTERRUPTED` for Ctrl-C, and
        :data:`EXIT_FAILURE` for any other exception. With ``args.debug`` the traceback is
        printed before the message; without it, errors other than ValueError/OSError (the
        project's bad-input errors) get a hint to rerun with ``--debug``.
    """
    prog = f"main.py {name}"

    def decorate(run: CommandRun) -> CommandRun:
        @functools.wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("default")  # each distinct warning once
                code = _run_guarded(args)
            if code == EXIT_OK:
                # Library warnings the readers did not turn into words themselves come out as
                # the command's own lines, not as raw "file:line: Category" text; after a
                # failure the error line alone says what matters.
                for message in dict.fromkeys(_one_line(w.message) for w in caught):
                    print(f"{prog}: warning: {message}", file=sys.stderr)
            return code

        def _run_guarded(args: argparse.Namespace) -> int:
            debug = bool(getattr(args, "debug", False))
            try:
                return int(run(args))
            except UsageError as error:
                if debug:
                    traceback.print_exc(file=sys.stderr)
                _print_error(prog, f"{describe_error(error)} (see `{prog} --help`)", sys.stderr)
                return EXIT_USAGE
            except KeyboardInterrupt:
                _print_error(prog, "interrupted", sys.stderr)
                return EXIT_INTERRUPTED
            except Exception as error:  # noqa: BLE001 - every failure becomes one line
                message = describe_error(error)
                if debug:
                    traceback.print_exc(file=sys.stderr)
                elif not isinstance(error, ValueError | OSError):
                    # Not a bad-input error but a bug or a library failure: say how to see more.
                    message += " (run with --debug for the traceback)"
                _print_error(prog, message, sys.stderr)
                return EXIT_FAILURE

        return guarded

    return decorate
