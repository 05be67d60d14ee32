"""Joining a Ray cluster for a run, or starting a local Ray when no address is given."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ClusterOptions", "ray_session"]

# A local Ray's shared-memory object store: cases come back as small row lists, so the store
# never holds much; Ray's default (30 % of RAM) would reserve gigabytes on a workstation.
_LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ClusterOptions:
    """How a run uses Ray.

    Parameters
    ----------
    address : str, optional
        A running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None starts a local
        Ray for the run and stops it afterwards.
    workers : int, optional
        CPUs of the local Ray (tasks running at once with one thread each); all cores when None.
        Ignored with an address.
    threads_per_task : int
        CPU threads each task asks Ray for and gives torch, so tasks sharing a node do not
        oversubscribe its cores.
    gpus_per_task : float
        GPUs a task asks for when its model runs on CUDA; a fraction (0.25) lets several tasks
        share one GPU, their decision rules running on the node's other cores.
    attempts : int
        Tries of a task whose worker process or node dies before the run fails.
    """

    address: str | None = None
    workers: int | None = None
    threads_per_task: int = 1
    gpus_per_task: float = 1.0
    attempts: int = 4


def _project_root() -> str:
    return str(Path(__file__).resolve().parents[2])


@contextmanager
def ray_session(options: ClusterOptions) -> Iterator[None]:
    """Connect Ray for the duration of a ``with`` block.

    A Ray this process already connected (a test cluster, a notebook) is used as it is and left
    running; otherwise the block joins ``options.address`` or starts a local Ray, and
    disconnects (stopping the local Ray) at the end.

    Raises
    ------
    ValueError
        The address cannot be reached.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    # Workers import this package: on a local Ray they find it through PYTHONPATH even when
    # segbench is run from a source checkout rather than installed. Cluster nodes need
    # segbench installed (README), which this leaves untouched.
    python_path = os.pathsep.join(
        p for p in (_project_root(), os.environ.get("PYTHONPATH", "")) if p
    )
    common = {"log_to_driver": False, "configure_logging": False}
    try:
        if options.address:
            ray.init(address=options.address, **common)
        else:
            ray.init(
                num_cpus=options.workers or os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
                runtime_env={"env_vars": {"PYTHONPATH": python_path}},
                **common,
            )
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = options.address or "a local Ray"
        raise ValueError(f"cannot start or reach {where}: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()
