"""``evaluate`` cases as Ray tasks: one task per case, the report kept by the driver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.cluster.resources import TaskResources, case_memory_bytes, check_fits_cluster, wants_gpu
from core.cluster.session import ClusterOptions, ray_session
from core.cluster.tasks import TaskRequest, run_tasks
from core.evaluation.case import (
    CaseOutcome,
    EvaluationSettings,
    LabelledCase,
    evaluate_case,
    load_models,
)
from core.jobs import CancelToken, ProgressCallback

__all__ = ["run_cases_on_ray", "score_case_task"]

# Models loaded by this worker process, kept for the next case of the same run: loading an
# nnU-Net ensemble per case would cost more than scoring a small case.
_loaded: dict[str, list[Any]] = {}


def score_case_task(
    case: LabelledCase,
    given: tuple[str, str],
    model_paths: Sequence[str],
    model_ids: Sequence[str],
    settings: EvaluationSettings,
    threads: int,
) -> tuple[CaseOutcome, str, float]:
    """The body of one Ray task: :func:`core.evaluation.evaluate_case` on a worker.

    Parameters
    ----------
    case : LabelledCase
        With absolute paths: a worker's working folder is not the driver's.
    given : (str, str)
        The image and label paths as the user gave them, for the report.
    model_paths, model_ids, settings
        Absolute model paths, their report ids, the run's settings.
    threads : int
        Torch threads (the CPUs the task reserved).

    Returns
    -------
    (CaseOutcome, str, float)
        The outcome, the id of the node that computed it and the seconds it took.
    """
    import ray
    import torch

    torch.set_num_threads(threads)
    key = json.dumps([list(model_paths), settings.model_options], sort_keys=True, default=str)
    if key not in _loaded:
        _loaded.clear()  # one run's models at a time
        _loaded[key] = load_models(model_paths, settings.model_options)
    if settings.device.startswith("cuda:"):
        # Ray shows a task only the GPU it was given, as device 0.
        settings = replace(settings, device="cuda")
    clock = time.perf_counter()
    outcome = evaluate_case(case, _loaded[key], model_ids, settings)
    outcome.record["image"], outcome.record["label"] = given
    return outcome, ray.get_runtime_context().get_node_id(), time.perf_counter() - clock


def run_cases_on_ray(
    run: Any,
    model_paths: Sequence[str],
    options: ClusterOptions,
    *,
    on_outcome: Callable[[CaseOutcome], None],
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Score the pending cases of ``run`` as Ray tasks, adding each to it as it arrives.

    Parameters
    ----------
    run : core.evaluation.EvaluationRun
        The run; its models are the ones loaded on the driver (for the memory estimate).
    model_paths : sequence of str
        Paths every node can read.
    options : ClusterOptions
    on_outcome : callable
        Called after each case was added to the report.
    on_progress : callable, optional
        Also told about lost attempts and retries.
    cancel : core.jobs.CancelToken, optional
    """
    import ray

    models = run.loaded_models
    with ray_session(options):
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        gpu = wants_gpu(run.settings.device, cluster_gpus)
        remote = ray.remote(score_case_task)
        nodes = ray.nodes()
        absolute_models = [str(Path(p).absolute()) for p in model_paths]
        requests = []
        for case in run.pending:
            resources = TaskResources(
                num_cpus=options.threads_per_task,
                num_gpus=options.gpus_per_task if gpu else 0,
                memory=case_memory_bytes(case.image, models),
            )
            check_fits_cluster(resources, nodes, str(case.image))
            absolute = LabelledCase(
                case.name, Path(case.image).absolute(), Path(case.label).absolute()
            )
            given = (str(case.image), str(case.label))
            args = (
                absolute,
                given,
                absolute_models,
                run.model_ids,
                run.settings,
                options.threads_per_task,
            )
            requests.append(TaskRequest(case.name, args, resources.ray_options()))

        def done(name: Any, result: tuple[CaseOutcome, str, float]) -> None:
            outcome, node, seconds = result
            run.add(outcome, node=node, seconds=seconds)
            on_outcome(outcome)

        def lost(name: Any, error: BaseException, retried: bool) -> None:
            run.progress.failures += 1
            run.progress.retries += int(retried)
            if on_progress is not None:
                on_progress(run.progress.as_progress())

        run_tasks(
            remote,
            requests,
            attempts=options.attempts,
            on_done=done,
            on_lost=lost,
            cancel=cancel,
        )
