"""A whole ``evaluate`` run: cases handed to an executor, the report kept and resumable.

The driver owns the report. Whichever executor scores the cases (this process, or Ray tasks
through :mod:`core.cluster`), each finished case is added here and the report is rewritten
atomically at once, rows in the order of the case list whatever order the cases finished in.
So an interrupted run leaves a valid partial report (``"complete": false``) holding every case
it finished, and ``resume`` takes those cases back instead of scoring them again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.evaluation.case import CaseOutcome, EvaluationSettings, evaluate_case, load_models
from core.evaluation.means import mean_rows
from core.jobs import CancelToken, Progress, ProgressCallback
from core.report_files import json_ready, write_json_atomic

__all__ = [
    "EXECUTORS",
    "EvaluationRun",
    "NodeStats",
    "RunProgress",
    "evaluate_cases",
    "unique_model_ids",
]

#: Where the cases are scored: this process, or Ray tasks (a cluster or a Ray started here).
EXECUTORS: tuple[str, ...] = ("local", "ray")

#: Node name of the cases scored in this process.
LOCAL_NODE = "local"


@dataclass
class NodeStats:
    """Cases one node finished, and the seconds its tasks took."""

    cases: int = 0
    busy_s: float = 0.0


@dataclass
class RunProgress:
    """The driver's view of a run: cases done, lost attempts and retries, work per node.

    Attributes
    ----------
    total : int
        Cases in the run (resumed ones included).
    done : int
        Cases finished, resumed ones included.
    resumed : int
        Cases taken from the report of an earlier run.
    failures : int
        Attempts lost to a worker process or node that died (each is retried).
    retries : int
        Attempts started again after such a loss.
    nodes : dict of str to NodeStats
        Finished cases per node (``"local"`` for this process).
    """

    total: int
    done: int = 0
    resumed: int = 0
    failures: int = 0
    retries: int = 0
    nodes: dict[str, NodeStats] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def node_rates(self) -> dict[str, float]:
        """Cases per minute of each node since the run started."""
        minutes = max(time.perf_counter() - self.started, 1e-9) / 60.0
        return {node: stats.cases / minutes for node, stats in self.nodes.items()}

    def as_progress(self) -> Progress:
        """A :class:`core.jobs.Progress` for the command line's bar and the GUI's dialog.

        ``values`` holds ``failures``, ``retries`` and ``cases/min <node>`` per node (node ids
        shortened to 8 characters).
        """
        rates = self.node_rates()
        values = {"failures": float(self.failures), "retries": float(self.retries)}
        values.update({f"cases/min {node[:8]}": rate for node, rate in rates.items()})
        message = f"{self.done}/{self.total} cases"
        if self.resumed:
            message += f" ({self.resumed} resumed)"
        if self.failures or self.retries:
            message += f", {self.failures} lost, {self.retries} retried"
        return Progress(self.done, self.total, message, values, stage="cases")

    def record(self) -> dict[str, Any]:
        """The report's ``run`` entry."""
        return {
            "resumed": self.resumed,
            "failures": self.failures,
            "retries": self.retries,
            "nodes": {
                node: {"cases": s.cases, "busy_s": s.busy_s} for node, s in self.nodes.items()
            },
        }


def unique_model_ids(models: Sequence[Any]) -> list[str]:
    """Display names, with the path added where two models would share one."""
    names = [m.name for m in models]
    return [f"{m.name} [{m.path}]" if names.count(m.name) > 1 else m.name for m in models]


class EvaluationRun:
    """The report of one run, rewritten atomically as each case finishes.

    Parameters
    ----------
    cases : sequence of case
        Every case of the run, in report order (name, image, label).
    models : sequence of core.models.LoadedModel
    settings : EvaluationSettings
    report_path : path-like
        Where the report is written.
    extra : dict, optional
        More top-level report entries (``unmatched`` files), written as given.
    """

    def __init__(
        self,
        cases: Sequence[Any],
        models: Sequence[Any],
        settings: EvaluationSettings,
        report_path: str | os.PathLike[str],
        *,
        executor: str = "local",
        extra: dict[str, Any] | None = None,
    ) -> None:
        from core import __version__

        self.cases = list(cases)
        self.loaded_models = list(models)
        self.model_ids = unique_model_ids(models)
        self.settings = settings
        self.report_path = Path(report_path)
        self.outcomes: dict[str, CaseOutcome] = {}
        self.progress = RunProgress(total=len(self.cases))
        self._head = {
            "command": "evaluate",
            "segbench_version": __version__,
            "complete": False,
            "executor": executor,
            "models": [
                {
                    "id": model_id,
                    "name": m.name,
                    "path": str(m.path),
                    "quantized": m.is_quantized,
                    "backend": m.backend,
                }
                for m, model_id in zip(models, self.model_ids, strict=True)
            ],
            "decisions": list(settings.decisions),
            "options": settings.options_record(),
            **(extra or {}),
        }

    @property
    def pending(self) -> list[Any]:
        """Cases not finished yet, in report order."""
        return [case for case in self.cases if case.name not in self.outcomes]

    def resume_from(self, path: str | os.PathLike[str]) -> int:
        """Take back the cases an earlier run of the same models and settings finished.

        Parameters
        ----------
        path : path-like
            That run's report (complete or partial).

        Returns
        -------
        int
            Cases taken back (a case is taken only if its image and label paths are the same).

        Raises
        ------
        ValueError
            The file is not an ``evaluate`` report, or it scored other models, decision rules or
            options (its rows could not be mixed with this run's).
        """
        path = Path(path)
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read the report to resume ({error})") from None
        if not isinstance(old, dict) or old.get("command") != "evaluate":
            raise ValueError(f"{path}: not an evaluate report")
        for key in ("models", "decisions", "options"):
            if json.dumps(old.get(key), sort_keys=True) != json.dumps(
                json.loads(json.dumps(self._head[key])), sort_keys=True
            ):
                raise ValueError(
                    f"{path}: was made with other {key} than this run; resume needs the same "
                    "--model, --decisions and decision/device options"
                )
        wanted = {case.name: case for case in self.cases}
        taken = 0
        for record in old.get("cases", []):
            case = wanted.get(record.get("name"))
            if case is None or record.get("image") != str(case.image):
                continue
            if record.get("label") != str(case.label):
                continue
            name = case.name
            outcome = CaseOutcome(name=name, record=record)
            for key in ("per_case", "warnings"):
                setattr(outcome, key, [r for r in old.get(key, []) if r.get("case") == name])
            calibration = old.get("calibration_cases", [])
            outcome.calibration = [r for r in calibration if r.get("case") == name]
            for key in ("inference", "decisions"):
                rows = old.get("timings", {}).get(key, [])
                setattr(outcome, key, [r for r in rows if r.get("case") == name])
            self.outcomes[name] = outcome
            taken += 1
        self.progress.done += taken
        self.progress.resumed += taken
        return taken

    def add(self, outcome: CaseOutcome, *, node: str = LOCAL_NODE, seconds: float = 0.0) -> None:
        """Record a finished case and rewrite the report."""
        self.outcomes[outcome.name] = outcome
        stats = self.progress.nodes.setdefault(node, NodeStats())
        stats.cases += 1
        stats.busy_s += seconds
        self.progress.done += 1
        self.write()

    def report(self, *, complete: bool = False) -> dict[str, Any]:
        """The report as it stands: finished cases only, in case-list order."""
        done = [self.outcomes[c.name] for c in self.cases if c.name in self.outcomes]
        # lazy: the package imports torch, which `main.py evaluate --help` must not load
        from core.probability_calibration.measure import summarize_records

        per_case = [row for o in done for row in o.per_case]
        calibration = [row for o in done for row in o.calibration]
        return {
            **self._head,
            "complete": complete,
            "cases": [o.record for o in done],
            "warnings": [w for o in done for w in o.warnings],
            "means": mean_rows(per_case),
            "per_case": per_case,
            "calibration": summarize_records(calibration),
            "calibration_cases": calibration,
            "timings": {
                "total_s": time.perf_counter() - self.progress.started,
                "inference": [r for o in done for r in o.inference],
                "decisions": [r for o in done for r in o.decisions],
            },
            "run": self.progress.record(),
        }

    def write(self, *, complete: bool = False) -> dict[str, Any]:
        """Write the report atomically; returns it as written (floats rounded)."""
        report = json_ready(self.report(complete=complete))
        write_json_atomic(report, self.report_path)
        return report


def _run_locally(
    run: EvaluationRun,
    models: Sequence[Any],
    on_progress: ProgressCallback | None,
    cancel: CancelToken | None,
    on_outcome: Callable[[CaseOutcome], None],
) -> None:
    total = len(run.cases)
    for case in run.pending:
        number = run.cases.index(case) + 1
        clock = time.perf_counter()
        outcome = evaluate_case(
            case,
            models,
            run.model_ids,
            run.settings,
            on_progress=on_progress,
            cancel=cancel,
            label_progress=lambda what, n=number: f"case {n}/{total} {what}",
        )
        run.add(outcome, seconds=time.perf_counter() - clock)
        on_outcome(outcome)


def evaluate_cases(
    cases: Sequence[Any],
    model_paths: Sequence[str | os.PathLike[str]],
    settings: EvaluationSettings,
    report_path: str | os.PathLike[str],
    *,
    executor: str = "local",
    cluster: Any = None,
    resume: str | os.PathLike[str] | None = None,
    extra: dict[str, Any] | None = None,
    on_outcome: Callable[[CaseOutcome], None] | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Score every case with every (model, decision) pair and write the report.

    Parameters
    ----------
    cases : sequence of case
        Name, image and label of each case, in report order.
    model_paths : sequence of path-like
    settings : EvaluationSettings
    report_path : path-like
        Rewritten atomically after every case; ``"complete": true`` once all are done.
    executor : {'local', 'ray'}
        Score in this process, or as Ray tasks (one task per case).
    cluster : core.cluster.ClusterOptions, optional
        Address, workers, threads per task and attempts for ``executor='ray'``.
    resume : path-like, optional
        A report of an earlier run of the same models and settings: its cases are taken back.
    extra : dict, optional
        More top-level report entries.
    on_outcome : callable, optional
        Called with each newly finished case (the CLI prints its warnings).
    on_progress : callable, optional
        Receives the case-level :class:`RunProgress` reports (stage ``"cases"``) and, locally,
        each case's inference and decision progress.
    cancel : core.jobs.CancelToken, optional
        Stops the run (Ray tasks are cancelled); the partial report stays resumable.

    Returns
    -------
    dict
        The complete report as written.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
    models = load_models(model_paths, settings.model_options)
    run = EvaluationRun(cases, models, settings, report_path, executor=executor, extra=extra)
    if resume is not None:
        run.resume_from(resume)
    if on_progress is not None:
        on_progress(run.progress.as_progress())

    def finished(outcome: CaseOutcome) -> None:
        if on_outcome is not None:
            on_outcome(outcome)
        if on_progress is not None:
            on_progress(run.progress.as_progress())

    if executor == "local":
        _run_locally(run, models, on_progress, cancel, finished)
    else:
        from core.cluster import ClusterOptions, run_cases_on_ray

        run_cases_on_ray(
            run,
            [str(p) for p in model_paths],
            cluster if cluster is not None else ClusterOptions(),
            on_outcome=finished,
            on_progress=on_progress,
            cancel=cancel,
        )
    return run.write(complete=True)
