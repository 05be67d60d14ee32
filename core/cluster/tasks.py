"""Submitting Ray tasks, collecting results as they finish, retrying work lost with a node.

Ray's own ``max_retries`` would retry a lost task too, but silently; the driver retries here
instead (``max_retries=0``) so it can count lost attempts and retries for its progress report,
and cancel everything still running when the user cancels or a task fails for a reason a retry
would not fix (an unreadable image).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.jobs import CancelToken, JobCancelled

__all__ = ["TaskRequest", "run_tasks"]

_POLL_S = 0.25  # how often the driver looks at the cancel token while tasks run


@dataclass
class TaskRequest:
    """One task to run: its key, the remote function's arguments, Ray options."""

    key: Hashable
    args: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _cancel_all(refs: Sequence[Any]) -> None:
    import ray

    for ref in refs:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - already finished or its node is gone: nothing to stop
            pass


def run_tasks(
    remote_function: Any,
    requests: Sequence[TaskRequest],
    *,
    attempts: int,
    on_done: Callable[[Hashable, Any], None],
    on_lost: Callable[[Hashable, BaseException, bool], None] | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Run every request as a task of ``remote_function``; hand results over as they arrive.

    Parameters
    ----------
    remote_function : ray.remote_function.RemoteFunction
    requests : sequence of TaskRequest
    attempts : int
        Tries per request when its worker process or node dies (at least 1).
    on_done : callable
        ``on_done(key, result)``, on the calling thread, in finishing order.
    on_lost : callable, optional
        ``on_lost(key, error, retried)`` for each attempt lost to a dead worker or node.
    cancel : core.jobs.CancelToken, optional
        Cancelling stops every task still queued or running.

    Raises
    ------
    core.jobs.JobCancelled
        The token was cancelled.
    Exception
        The exception a task raised (its own type and message, as if raised here), or a
        RuntimeError when a request was lost ``attempts`` times.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError

    by_key = {request.key: request for request in requests}
    tries: dict[Hashable, int] = {}
    running: dict[Any, Hashable] = {}

    def submit(key: Hashable) -> None:
        request = by_key[key]
        tries[key] = tries.get(key, 0) + 1
        ref = remote_function.options(max_retries=0, **request.options).remote(*request.args)
        running[ref] = key

    for request in requests:
        submit(request.key)
    try:
        while running:
            if cancel is not None and cancel.cancelled:
                raise JobCancelled()
            ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
            for ref in ready:
                key = running.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as error:
                    # The task's own exception: the same input would fail again anywhere.
                    cause = getattr(error, "cause", None)
                    raise (cause if isinstance(cause, Exception) else error) from None
                except TaskCancelledError:
                    raise JobCancelled() from None
                except RayError as error:  # the worker process or its node died
                    retried = tries[key] < attempts
                    if on_lost is not None:
                        on_lost(key, error, retried)
                    if not retried:
                        raise RuntimeError(
                            f"{key}: lost {tries[key]} time(s) with its worker or node "
                            f"({type(error).__name__})"
                        ) from None
                    submit(key)
                    continue
                on_done(key, result)
    finally:
        _cancel_all(list(running))
