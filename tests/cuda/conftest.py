"""The device the ``cuda`` tests compare against the CPU.

On a machine with CUDA it is ``cuda``. Without CUDA the tests are skipped, unless
``SEGBENCH_CUDA_DRY_RUN=1`` (set by ``tools/gpu_check.sh --dry-run``, which CI runs): then the
same code runs with the CPU standing in for the GPU, so the tests and the script never rot.
Figures the tests measure (peak GPU memory per job) are appended to the JSON-lines file named by
``SEGBENCH_GPU_RECORD`` when it is set.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

DRY_RUN = os.environ.get("SEGBENCH_CUDA_DRY_RUN") == "1"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available() or DRY_RUN:
        return
    skip = pytest.mark.skip(reason="no CUDA device (tools/gpu_check.sh runs these on a GPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def target_device() -> torch.device:
    """``cuda:0``, or the CPU standing in for it in a dry run."""
    if torch.cuda.is_available() and not DRY_RUN:
        return torch.device("cuda", 0)
    return torch.device("cpu")


@pytest.fixture
def record():
    """Append one named figure to the gpu_check record (no-op when none is kept)."""

    def _record(name: str, value: float, unit: str) -> None:
        path = os.environ.get("SEGBENCH_GPU_RECORD")
        if path:
            with open(path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"name": name, "value": value, "unit": unit}) + "\n")

    return _record
