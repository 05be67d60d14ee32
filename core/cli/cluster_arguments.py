"""``--executor``, ``--address`` and the Ray task options shared by ``evaluate`` and ``sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli.arguments import positive_float, positive_int

__all__ = ["EXECUTOR_CHOICES", "add_cluster_options", "cluster_options"]

#: Same values as ``core.evaluation.run.EXECUTORS``.
EXECUTOR_CHOICES: tuple[str, ...] = ("local", "ray")


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose where the work runs."""
    group = parser.add_argument_group("where the work runs")
    group.add_argument(
        "--executor",
        choices=EXECUTOR_CHOICES,
        default="local",
        help="local: this process (default); ray: one Ray task per case, on the cluster at "
        "--address or on a Ray started for the run",
    )
    group.add_argument(
        "--address",
        metavar="ADDRESS",
        help="Ray cluster to join (host:6379, ray://host:10001 or auto); every node must see "
        "the model and image paths. Default: start a local Ray",
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPUs of the local Ray (default: all cores); ignored with --address",
    )
    group.add_argument(
        "--threads-per-task",
        type=positive_int,
        default=1,
        metavar="N",
        help="CPU threads each Ray task reserves and gives torch (default 1)",
    )
    group.add_argument(
        "--gpus-per-task",
        type=positive_float,
        default=1.0,
        metavar="F",
        help="GPUs a Ray task reserves when the model runs on CUDA; 0.25 lets four tasks share "
        "a GPU (default 1)",
    )


def cluster_options(args: argparse.Namespace) -> Any:
    """The :class:`core.cluster.ClusterOptions` given on the command line."""
    from core.cluster.session import ClusterOptions

    return ClusterOptions(
        address=args.address,
        workers=args.workers,
        threads_per_task=args.threads_per_task,
        gpus_per_task=args.gpus_per_task,
    )
