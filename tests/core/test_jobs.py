import threading

import pytest
import torch

from core.device import resolve_device, select_device
from core.jobs import CancelToken, JobCancelled, Progress, ProgressThrottle, report


def test_progress_fraction():
    assert Progress(3, 4).fraction == 0.75
    assert Progress(5, None).fraction is None
    assert Progress(9, 4).fraction == 1.0


def test_cancel_token_raises_only_after_cancel():
    token = CancelToken()
    token.raise_if_cancelled()
    assert not token.cancelled
    threading.Thread(target=token.cancel).start()
    for _ in range(1000):
        if token.cancelled:
            break
        threading.Event().wait(0.001)
    with pytest.raises(JobCancelled):
        token.raise_if_cancelled()


def test_report_without_callback_is_a_no_op_and_with_callback_forwards():
    report(None, Progress(1))
    got = []
    report(got.append, Progress(2, 3, "x"))
    assert got == [Progress(2, 3, "x")]


def test_throttle_forwards_first_and_last_but_drops_bursts():
    got = []
    throttle = ProgressThrottle(got.append, interval=60.0)
    for step in range(1, 101):
        throttle(Progress(step, 100))
    assert [p.step for p in got] == [1, 100]


def test_select_device_cpu_and_auto_describe_choice():
    cpu = select_device("cpu")
    assert cpu.device == torch.device("cpu") and "CPU" in cpu.description
    auto = select_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device.type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_select_device_threads_override():
    before = torch.get_num_threads()
    try:
        choice = select_device("cpu", threads=1)
        assert torch.get_num_threads() == 1 and "1 threads" in choice.description
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["tpu", "gpu0"])
def test_select_device_rejects_unknown(bad):
    with pytest.raises(ValueError, match="unknown device"):
        select_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda_is_an_error_not_a_silent_fallback():
    with pytest.raises(ValueError, match="no CUDA device"):
        select_device("cuda")
