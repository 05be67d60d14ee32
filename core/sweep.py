"""Quantization sweeps: methods x bits x seeds quantized as tasks, then evaluated together.

Each point of the sweep quantizes the float model with :func:`core.quant.variant.
quantize_to_folder` (one Ray task per point, or in turn in this process) into its own model
folder; then every variant, with the float model as the reference, is scored by the same
machinery as ``evaluate`` (:func:`core.evaluation.evaluate_cases`), and the means become one
table row per (variant, decision rule) and a plot of Dice against bits per method
(:mod:`core.sweep_plot`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.cluster.session import ClusterOptions, ray_session
from core.evaluation import EvaluationSettings, evaluate_cases
from core.jobs import CancelToken, Progress, ProgressCallback

__all__ = ["SweepPoint", "quantize_point", "run_sweep", "sweep_rows"]

#: The float model's ``method`` and ``bits`` in the table.
FLOAT_METHOD, FLOAT_BITS = "float", 32


@dataclass(frozen=True, order=True)
class SweepPoint:
    """One variant of the sweep."""

    method: str
    bits: int
    seed: int

    @property
    def folder_name(self) -> str:
        return f"{self.method}-w{self.bits}-s{self.seed}"


def quantize_point(
    model_path: str,
    calib_paths: Sequence[str],
    config: Any,
    out: str,
    samples: int,
    crop: int | None,
    model_options: dict[str, Any],
    threads: int | None = None,
) -> float:
    """Quantize and save one variant (a Ray task body, or called in this process).

    Returns
    -------
    float
        Seconds taken, reading and calibration sampling included.
    """
    from core.evaluation.case import load_models
    from core.io import read_image
    from core.quant.variant import quantize_to_folder

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if str(config.device).startswith("cuda:"):
        config = replace(config, device="cuda")  # a Ray task sees its one GPU as device 0
    clock = time.perf_counter()
    (model,) = load_models([model_path], model_options)
    images = [read_image(path) for path in calib_paths]
    quantize_to_folder(model, images, config, out, samples=samples, crop=crop)
    return time.perf_counter() - clock


def _quantize_all(
    jobs: dict[SweepPoint, tuple[Any, ...]],
    executor: str,
    cluster: ClusterOptions,
    device: str,
    report: ProgressCallback,
    cancel: CancelToken | None,
) -> dict[SweepPoint, float]:
    seconds: dict[SweepPoint, float] = {}
    if executor == "local":
        for point, args in jobs.items():
            if cancel is not None:
                cancel.raise_if_cancelled()
            seconds[point] = quantize_point(*args)
            report(len(seconds))
        return seconds
    import ray

    from core.cluster.resources import BASE_TASK_BYTES, TaskResources, image_voxels, wants_gpu
    from core.cluster.tasks import TaskRequest, run_tasks

    gpu = wants_gpu(device, ray.cluster_resources().get("GPU", 0))
    requests = []
    for point, args in jobs.items():
        # The calibration images in float32 and the model's working copies dominate.
        memory = BASE_TASK_BYTES + 8 * sum(image_voxels(p) for p in args[1])
        gpus = cluster.gpus_per_task if gpu else 0
        resources = TaskResources(cluster.threads_per_task, gpus, memory)
        requests.append(
            TaskRequest(point, (*args, cluster.threads_per_task), resources.ray_options())
        )

    def done(point: Any, result: float) -> None:
        seconds[point] = result
        report(len(seconds))

    run_tasks(
        ray.remote(quantize_point),
        requests,
        attempts=cluster.attempts,
        on_done=done,
        cancel=cancel,
    )
    return seconds


def run_sweep(
    model_path: str | os.PathLike[str],
    calib_paths: Sequence[str | os.PathLike[str]],
    cases: Sequence[Any],
    points: Sequence[SweepPoint],
    base_config: Any,
    settings: EvaluationSettings,
    out: str | os.PathLike[str],
    *,
    samples: int,
    crop: int | None,
    executor: str = "local",
    cluster: ClusterOptions | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Quantize every point into ``out/variants`` and evaluate them with the float model.

    Parameters
    ----------
    model_path : path-like
        The float model (a path every node sees).
    calib_paths : sequence of path-like
        Calibration images.
    cases : sequence of case
        Labelled cases to evaluate on (name, image, label).
    points : sequence of SweepPoint
    base_config : core.quant.QuantConfig
        Settings shared by every point; method, bits and seed are replaced per point.
    settings : EvaluationSettings
    out : path-like
        Output folder: ``variants/METHOD-wBITS-sSEED`` model folders and ``evaluate.json``.
    samples, crop
        Calibration sampling (as ``quantize``).
    executor : {'local', 'ray'}
    cluster : ClusterOptions, optional
    on_progress, cancel
        See :mod:`core.jobs`.

    Returns
    -------
    (list of dict, dict)
        The table rows (:func:`sweep_rows`) and the evaluation report.
    """
    cluster = cluster if cluster is not None else ClusterOptions()
    out = Path(out)
    variants = out / "variants"
    variants.mkdir(parents=True, exist_ok=True)
    jobs = {
        # Absolute paths: a Ray worker's working folder is not the driver's.
        point: (
            str(Path(model_path).absolute()),
            [str(Path(p).absolute()) for p in calib_paths],
            replace(base_config, method=point.method, bits=point.bits, seed=point.seed),
            str(variants.absolute() / point.folder_name),
            samples,
            crop,
            settings.model_options,
        )
        for point in points
    }

    def quantized(count: int) -> None:
        if on_progress is not None:
            on_progress(
                Progress(count, len(jobs), f"{count}/{len(jobs)} variants", stage="quantize")
            )

    session = ray_session(cluster) if executor == "ray" else _no_session()
    with session:
        quantized(0)
        seconds = _quantize_all(jobs, executor, cluster, base_config.device, quantized, cancel)
        paths = [str(model_path), *(str(variants / p.folder_name) for p in points)]
        report = evaluate_cases(
            cases,
            paths,
            settings,
            out / "evaluate.json",
            executor=executor,
            cluster=cluster,
            on_progress=on_progress,
            cancel=cancel,
        )
    return sweep_rows(points, paths, seconds, report), report


class _no_session:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def sweep_rows(
    points: Sequence[SweepPoint],
    paths: Sequence[str],
    quantize_seconds: dict[SweepPoint, float],
    report: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per (variant, decision): mean Dice per class, mean foreground Dice, times.

    Parameters
    ----------
    points : sequence of SweepPoint
        The variants, in the order of ``paths[1:]``.
    paths : sequence of str
        The float model, then each variant's folder.
    quantize_seconds : dict
        Seconds each point's quantization took.
    report : dict
        The evaluation report.

    Returns
    -------
    list of dict
        Keys method, bits, seed, decision, ``dice <class>`` per class, mean_dice (mean over
        cases of the mean over foreground classes), quantize_s, evaluate_s (the variant's
        inference plus decision seconds over all cases). The float model comes first, with
        method ``float``, 32 bits and no seed.
    """
    id_of = {m["path"]: m["id"] for m in report["models"]}
    inference: dict[str, float] = {}
    for row in report["timings"]["inference"]:
        inference[row["model"]] = inference.get(row["model"], 0.0) + (row["seconds"] or 0.0)
    deciding: dict[tuple[str, str], float] = {}
    for row in report["timings"]["decisions"]:
        key = (row["model"], row["decision"])
        deciding[key] = deciding.get(key, 0.0) + (row["decision_s"] or 0.0)
    rows = []
    labelled = [(None, FLOAT_METHOD, FLOAT_BITS, None)]
    labelled += [(p, p.method, p.bits, p.seed) for p in points]
    for (point, method, bits, seed), path in zip(labelled, paths, strict=True):
        model_id = id_of[str(path)]
        for decision in report["decisions"]:
            row: dict[str, Any] = {"method": method, "bits": bits, "seed": seed}
            row["decision"] = decision
            for mean in report["means"]:
                if (mean["model"], mean["decision"]) != (model_id, decision):
                    continue
                if mean["label"] is None:
                    row["mean_dice"] = mean["dice"]
                else:
                    row[f"dice {mean['class']}"] = mean["dice"]
            row["quantize_s"] = quantize_seconds.get(point) if point is not None else None
            row["evaluate_s"] = inference.get(model_id, 0.0) + deciding.get(
                (model_id, decision), 0.0
            )
            rows.append(row)
    return rows
