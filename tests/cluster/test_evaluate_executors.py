"""``evaluate`` on Ray against the local run: equal reports, a node lost mid-run, resume, cancel."""

from __future__ import annotations

import json
import os
import signal
import time

import nibabel as nib
import numpy as np
import pytest

from core.cluster import ClusterOptions
from core.evaluation import EvaluationSettings, evaluate_cases
from core.io import read_image
from core.jobs import CancelToken, JobCancelled
from core.models import load_model, predict
from tests.cli.conftest import numpy_dice, run_cli

SETTINGS = EvaluationSettings(decisions=("argmax", "rma-dice", "rma-iou"), device="cpu")
# What differs between two runs that computed the same thing: where and how fast (and the
# unpaired files, which only the command line looks for).
RUN_ONLY = ("executor", "timings", "run", "unmatched")


def evaluate_cli(eval_data, decisions, report, *more):
    """``main.py evaluate`` of both models over every case, on the CPU."""
    return run_cli(
        "evaluate", "--model", *eval_data.models, "--images", eval_data.images,
        "--labels", eval_data.labels, "--decisions", decisions, "--device", "cpu",
        "--report", report, *more,
    )  # fmt: skip


def scored(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in RUN_ONLY}


@pytest.fixture(scope="module")
def local_report(eval_data, tmp_path_factory):
    """The local run's report, as written."""
    path = tmp_path_factory.mktemp("local") / "local.json"
    evaluate_cases(eval_data.cases, eval_data.models, SETTINGS, path)
    return json.loads(path.read_text())


def test_local_report_rows_match_numpy_dice_of_the_argmax_mask(eval_data, local_report):
    model = load_model(eval_data.models[0])
    case = eval_data.cases[2]
    mask = predict(model, read_image(case.image), device="cpu").argmax(0)
    truth = np.asarray(nib.load(case.label).dataobj)
    rows = [
        r
        for r in local_report["per_case"]
        if (r["model"], r["decision"], r["case"]) == ("tiny0", "argmax", case.name)
    ]
    assert [r["label"] for r in rows] == list(range(len(rows)))
    for row in rows:
        assert row["dice"] == pytest.approx(numpy_dice(mask, truth, row["label"]), abs=1e-6)
    assert local_report["complete"] is True
    assert [c["name"] for c in local_report["cases"]] == [c.name for c in eval_data.cases]


@pytest.mark.slow
def test_ray_run_losing_a_node_retries_its_case_and_equals_the_local_report(
    eval_data, local_report, ray_cluster, tmp_path
):
    cluster, nodes = ray_cluster
    path = tmp_path / "ray.json"
    removed = []

    def remove_a_node_running_a_case(outcome):
        if not removed:
            for node, _ in _running_case_workers(nodes)[:1]:
                cluster.remove_node(node)
                removed.append(node)

    report = evaluate_cases(
        eval_data.cases,
        eval_data.models,
        SETTINGS,
        path,
        executor="ray",
        cluster=ClusterOptions(),
        on_outcome=remove_a_node_running_a_case,
    )
    assert removed
    assert report["run"]["failures"] >= 1
    assert report["run"]["retries"] == report["run"]["failures"]
    assert sum(n["cases"] for n in report["run"]["nodes"].values()) == len(eval_data.cases)
    assert scored(json.loads(path.read_text())) == scored(local_report)
    # Replace the lost node for the tests after this one.
    nodes.remove(removed[0])
    nodes.append(cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20))


def _descendants(pid: int) -> set[int]:
    """Process ids under ``pid``, read from /proc (no psutil here)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _running_case_workers(nodes) -> list[tuple[object, int]]:
    """(node, worker pid) of this cluster's workers running a case task now; waits for one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = []
        for node in nodes:
            for name, process in node.live_processes():
                if name != "raylet":
                    continue
                for pid in _descendants(process.pid):
                    try:
                        title = open(f"/proc/{pid}/cmdline").read()
                    except OSError:
                        continue
                    if title.startswith("ray::score_case_task"):
                        found.append((node, pid))
        if found:
            return found
        time.sleep(0.02)
    return []


@pytest.mark.slow
def test_ray_run_whose_worker_process_is_killed_retries_the_case(
    eval_data, local_report, ray_cluster, tmp_path
):
    _, nodes = ray_cluster
    killed = []

    def kill_a_running_worker(outcome):
        if not killed:
            for _, pid in _running_case_workers(nodes)[:1]:
                os.kill(pid, signal.SIGKILL)  # a worker this test's cluster started
                killed.append(pid)

    path = tmp_path / "ray.json"
    evaluate_cases(
        eval_data.cases, eval_data.models, SETTINGS, path, executor="ray",
        on_outcome=kill_a_running_worker,
    )  # fmt: skip
    report = json.loads(path.read_text())
    assert killed
    assert report["run"]["failures"] >= 1 and report["run"]["retries"] >= 1
    assert scored(report) == scored(local_report)


@pytest.mark.slow
def test_ray_run_reports_an_unreadable_image_by_name_without_retrying(
    eval_data, ray_cluster, tmp_path
):
    broken = tmp_path / "case01.nii.gz"
    broken.write_bytes(b"not a nifti file")
    case = type(eval_data.cases[0])(name="case01", image=broken, label=eval_data.cases[0].label)
    with pytest.raises(ValueError, match="case01.nii.gz"):
        evaluate_cases([case], eval_data.models[:1], SETTINGS, tmp_path / "r.json", executor="ray")


@pytest.mark.slow
def test_cancelling_a_ray_run_keeps_a_partial_report_that_resume_completes(
    eval_data, local_report, ray_cluster, tmp_path
):
    path = tmp_path / "partial.json"
    token = CancelToken()
    with pytest.raises(JobCancelled):
        evaluate_cases(
            eval_data.cases,
            eval_data.models,
            SETTINGS,
            path,
            executor="ray",
            on_outcome=lambda outcome: token.cancel(),
            cancel=token,
        )
    partial = json.loads(path.read_text())
    assert partial["complete"] is False
    finished = [c["name"] for c in partial["cases"]]
    assert 1 <= len(finished) < len(eval_data.cases)
    report = evaluate_cases(
        eval_data.cases, eval_data.models, SETTINGS, path, executor="ray", resume=path
    )
    assert report["run"]["resumed"] == len(finished)
    assert scored(json.loads(path.read_text())) == scored(local_report)


def test_resume_after_an_interrupted_local_run_equals_an_uninterrupted_run(
    eval_data, local_report, tmp_path
):
    path = tmp_path / "eval.json"
    token = CancelToken()
    finished = []

    def stop_after_two(outcome):
        finished.append(outcome.name)
        if len(finished) == 2:
            token.cancel()

    with pytest.raises(JobCancelled):
        evaluate_cases(
            eval_data.cases,
            eval_data.models,
            SETTINGS,
            path,
            on_outcome=stop_after_two,
            cancel=token,
        )
    partial = json.loads(path.read_text())
    assert partial["complete"] is False
    assert [c["name"] for c in partial["cases"]] == finished == ["case01", "case02"]
    assert len(partial["per_case"]) == 2 * 2 * 3 * 4  # cases x models x decisions x classes
    result = evaluate_cli(eval_data, "argmax,rma-dice,rma-iou", path, "--resume", path)
    assert result.returncode == 0, result.stderr
    assert "(2 resumed)" in result.stdout
    report = json.loads(path.read_text())
    assert report["run"]["resumed"] == 2
    assert sum(n["cases"] for n in report["run"]["nodes"].values()) == 4
    assert scored(report) == scored(local_report)


def test_resume_refuses_a_report_of_other_decisions(eval_data, local_report, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(local_report))
    result = evaluate_cli(eval_data, "argmax", tmp_path / "new.json", "--resume", path)
    assert result.returncode == 1
    assert f"{path}: was made with other decisions" in result.stderr
    assert not (tmp_path / "new.json").exists()


@pytest.mark.slow
def test_cuda_tasks_ask_ray_for_a_gpu_which_this_cluster_lacks(eval_data, ray_cluster, tmp_path):
    cuda = EvaluationSettings(decisions=("argmax",), device="cuda")
    with pytest.raises(ValueError, match=r"case01\.nii\.gz: a task needs 1 CPU, 0\.25 GPU"):
        evaluate_cases(
            eval_data.cases, eval_data.models, cuda, tmp_path / "r.json", executor="ray",
            cluster=ClusterOptions(gpus_per_task=0.25),
        )  # fmt: skip
    assert not (tmp_path / "r.json").exists()  # refused before any task ran
