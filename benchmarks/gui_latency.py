"""Event-loop lag of the GUI while a heavy core job runs on the worker thread.

A 10 ms QTimer fires on the GUI thread; its lateness (actual minus expected interval) is the lag a
user feels as stutter. We measure it idle and while the worker runs, for:

- ``torch``: a conv-net training loop (torch kernels release the GIL),
- ``python``: a pure-Python loop that never releases the GIL voluntarily,
- ``quantize``: the real FlexRound quantization of the demo model (when core.quant and the demo
  model are available).

Target: p99 under 50 ms while a job runs. Run: ``python benchmarks/gui_latency.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QElapsedTimer, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from core.jobs import Progress  # noqa: E402
from gui.workers import JobRunner, JobWorker  # noqa: E402

TICK_MS = 10


def torch_job(seconds: float, *, on_progress=None, cancel=None):
    """Stand-in for reconstruction: forward/backward of a small conv net on 64x64 inputs."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 3, padding=1)
    )
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(8, 1, 64, 64)
    end = time.perf_counter() + seconds
    step = 0
    while time.perf_counter() < end:
        cancel.raise_if_cancelled()
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0:
            on_progress(Progress(step, None, f"iteration {step}", {"loss": float(loss.detach())}))
    return step


def python_job(seconds: float, *, on_progress=None, cancel=None):
    """Worst case: pure-Python arithmetic that only yields the GIL at the switch interval."""
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        cancel.raise_if_cancelled()
        for i in range(20000):
            total += i * i % 7
    return total


def quantize_job(seconds: float, *, on_progress=None, cancel=None):
    """The real thing: FlexRound W4 on the demo model with demo calibration slices."""
    from core.demo import demo_paths
    from core.io import read_image
    from core.models import calibration_inputs, load_model
    from core.quant import QuantConfig, quantize_model

    paths = demo_paths()
    model = load_model(paths.model)
    calib = calibration_inputs(model, read_image(paths.image), n=32)
    config = QuantConfig(method="flexround", bits=4, iters=100000, device="cpu")
    end = time.perf_counter() + seconds

    def progress(p):
        on_progress(p)
        if time.perf_counter() > end:
            cancel.cancel()

    try:
        quantize_model(model.module, calib, config, on_progress=progress, cancel=cancel)
    except Exception as exc:  # JobCancelled once the time is up
        if type(exc).__name__ != "JobCancelled":
            raise
    return None


JOBS = {"torch": torch_job, "python": python_job, "quantize": quantize_job}


def measure_lag(app: QApplication, seconds: float, job=None) -> np.ndarray:
    """Run the event loop for ``seconds``; return timer lateness in ms (with ``job`` running)."""
    lags: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer()
    timer.setInterval(TICK_MS)
    last = [0]

    def tick():
        now = clock.elapsed()
        lags.append(max(0, now - last[0] - TICK_MS))
        last[0] = now

    timer.timeout.connect(tick)
    runner = JobRunner()
    done = [job is None]
    if job is not None:
        worker = JobWorker(job, seconds, title="bench")
        worker.signals.progressed.connect(lambda p: None)  # progress crosses threads as in the app
        worker.signals.finished.connect(lambda: done.__setitem__(0, True))
        worker.signals.failed.connect(lambda f: print("job failed:", f.message))
        runner.start(worker)
    clock.start()
    timer.start()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or not done[0]:
        app.processEvents()
        time.sleep(0.0005)
    timer.stop()
    return np.asarray(lags[1:], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--jobs", default="torch,python,quantize")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the job")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    app = QApplication.instance() or QApplication([])
    print(f"timer {TICK_MS} ms, {args.seconds:.0f} s per case, torch threads {args.threads}")
    print(f"{'case':<12}{'ticks':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  p99 < 50 ms")
    rows = [("idle", None)] + [(name, JOBS[name]) for name in args.jobs.split(",")]
    for name, job in rows:
        if name == "quantize":
            try:
                import core.demo  # noqa: F401
                import core.quant  # noqa: F401
            except ImportError as exc:
                print(f"{name:<12} skipped: {exc}")
                continue
        lags = measure_lag(app, args.seconds, job)
        p50, p99 = np.percentile(lags, [50, 99])
        ok = "yes" if p99 < 50 else "NO"
        print(f"{name:<12}{lags.size:>7}{p50:>9.1f}{p99:>9.1f}{lags.max():>9.1f}  {ok}")


if __name__ == "__main__":
    main()
