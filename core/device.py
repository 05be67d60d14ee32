"""Choosing where torch computes: CUDA when present, the CPU otherwise, or what the user asked."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = ["DeviceChoice", "gui_torch_threads", "select_device", "resolve_device"]

_ALLOWED = ("auto", "cpu", "cuda")


@functools.cache  # torch's default, read once at start-up (select_device then changes it)
def gui_torch_threads() -> int:
    """torch's CPU threads in the GUI app: its default (one per physical core) less one.

    The GUI thread needs a core of its own while a job runs; on two cores a second torch thread
    only competed with it (and with other programs) and made RankSEG-RMA slower than one thread
    (benchmarks/bench_gui_volume.py --threads). The app's ``--threads`` overrides it. Here, not
    in ``gui``, so a benchmark on a machine without Qt measures the same rule.
    """
    return max(1, torch.get_num_threads() - 1)


@dataclass(frozen=True)
class DeviceChoice:
    """The device a job will use and why.

    Attributes
    ----------
    device : torch.device
        Where tensors go.
    description : str
        The choice in words, for logs and the status bar ("CUDA: NVIDIA H100 (cuda:0)",
        "CPU, 2 threads (no CUDA device found)").
    """

    device: torch.device
    description: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def select_device(preference: str = "auto", *, threads: int | None = None) -> DeviceChoice:
    """Pick the torch device for a job.

    Parameters
    ----------
    preference : {'auto', 'cpu', 'cuda', 'cuda:N'}
        ``'auto'`` takes the first CUDA device when one is available and the CPU otherwise.
        Asking for CUDA on a machine without it raises ValueError rather than silently falling
        back, so a user override is never ignored.
    threads : int, optional
        Number of CPU threads torch may use (``torch.set_num_threads``); None leaves it as is.

    Returns
    -------
    DeviceChoice
    """
    pref = (preference or "auto").strip().lower()
    if pref not in _ALLOWED and not pref.startswith("cuda:"):
        raise ValueError(f"unknown device {preference!r}: use one of auto, cpu, cuda, cuda:N")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    n_threads = torch.get_num_threads()
    has_cuda = torch.cuda.is_available()
    if pref == "cpu":
        return DeviceChoice(torch.device("cpu"), f"CPU, {n_threads} threads (chosen by the user)")
    if pref.startswith("cuda"):
        if not has_cuda:
            raise ValueError(f"device {preference!r} was asked for but no CUDA device is available")
        device = torch.device(pref)
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {preference!r} was asked for but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
        name = torch.cuda.get_device_name(index)
        return DeviceChoice(torch.device("cuda", index), f"CUDA: {name} (cuda:{index})")
    if has_cuda:
        name = torch.cuda.get_device_name(0)
        return DeviceChoice(torch.device("cuda", 0), f"CUDA: {name} (cuda:0, chosen automatically)")
    return DeviceChoice(torch.device("cpu"), f"CPU, {n_threads} threads (no CUDA device found)")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a user-facing device argument (``'auto'``, ``'cpu'``, a torch.device) into a device."""
    if isinstance(device, torch.device):
        return device
    return select_device(device or "auto").device
