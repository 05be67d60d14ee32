"""The real main window on a CT-sized phantom: GUI-thread stalls and memory, stage by stage.

The flow a reviewer follows on an ordinary abdominal CT (512x512x300 voxels): open the image (a
NIfTI file written once from :func:`core.phantom.make_phantom`), its ground truth, the demo model;
segment with argmax and RankSEG-RMA; scroll, drag the window/level, toggle overlays and switch
between results; quantize the model to W4 (round-to-nearest) and segment with the variant and
RMA; compare two results side by side, scroll and toggle there. Every action is posted to the
event loop (as a click would be) and the script waits for the jobs it starts.

Per stage it prints the wall time, the longest GUI-thread slot (the longest single event
dispatch, paints included, with what it was), the lateness of a 10 ms timer (p99 and max: what
a user feels as stutter), and the peak resident memory (VmHWM, reset at each stage start).
Target: no slot over 50 ms, the whole flow under 2.5 GB.

``--before TREE`` runs the same flow on another checkout of segbench (for instance ``git
archive 851b18b | tar -x -C /tmp/segbench-base``) and on this one, each in its own process,
and prints them side by side. ``--threads`` measures the jobs themselves (inference on a slab,
the RMA decision of the whole volume, the readouts) with one and two torch threads under the
app's start-up threading settings, and with two threads under OpenMP's defaults (the app
before it set them).

``--sample-slots`` samples the GUI thread's Python stack every 2 ms while a dispatch has run
over 10 ms and prints, under each stage, where its longest slot spent its time ("Qt, no Python
frame" means painting or layout inside Qt).

Run: ``python benchmarks/bench_gui_volume.py [--shape 512,512,300] [--before TREE] [--threads]``
(a 512x512x300 flow takes several minutes on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
TICK_MS = 10
POLL_MS = 20
SETTLE_S = 0.3  # after a stage's last job: let the views repaint before the stage ends
STAGE_TIMEOUT_S = 1800.0


@dataclass
class StageFigures:
    """What one stage of the flow cost."""

    name: str
    wall_s: float = 0.0
    longest_slot_ms: float = 0.0
    longest_slot_what: str = ""
    lateness_p99_ms: float = 0.0
    lateness_max_ms: float = 0.0
    peak_rss_mb: float = 0.0
    end_rss_mb: float = 0.0
    timed_out: bool = False
    slot_stacks: list = field(default_factory=list)  # with --sample-slots: where it spent time


@dataclass
class FlowFigures:
    """Every stage, the process's peak and the code that ran."""

    tree: str
    shape: tuple[int, int, int]
    stages: list[StageFigures] = field(default_factory=list)
    peak_rss_mb: float = 0.0


# --- memory -------------------------------------------------------------------------------------
def _status_kb(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return float(line.split()[1])
    return float("nan")


def reset_peak_rss() -> None:
    """Start a new VmHWM window (Linux: writing 5 to clear_refs resets the peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:  # not permitted: the peak then runs from the process start
        pass


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024.0


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024.0


# --- phantom files ------------------------------------------------------------------------------
def phantom_files(shape: tuple[int, int, int], cache: Path) -> tuple[Path, Path]:
    """Write the phantom image and label as NIfTI once per shape (reused by later runs)."""
    import nibabel as nib

    from core.phantom import make_phantom

    stem = "phantom_" + "x".join(map(str, shape))
    image_path, label_path = cache / f"{stem}.nii", cache / f"{stem}_label.nii"
    if not (image_path.exists() and label_path.exists()):
        cache.mkdir(parents=True, exist_ok=True)
        image, label = make_phantom(0, shape)
        # No stored window: the viewer then takes percentiles, as for most NIfTI files.
        nib.save(nib.Nifti1Image(np.asarray(image.array), image.affine), image_path)
        nib.save(nib.Nifti1Image(label.astype(np.uint8), image.affine), label_path)
    return image_path, label_path


# --- the event-loop probe -----------------------------------------------------------------------
class SlotProbe:
    """Times every outermost event dispatch of the application (slots, timers, paints).

    Installed by replacing the application's class with a subclass whose ``notify`` wraps the
    dispatch; nested dispatches (an event loop inside a slot) count towards their outer one.
    """

    def __init__(self, sample: bool = False) -> None:
        self.depth = 0
        self.longest = 0.0
        self.what = ""
        self.started = 0.0  # when the outermost dispatch in progress began
        self.samples: list[str] = []  # stacks sampled during the dispatch in progress
        self.longest_samples: list[str] = []
        if sample:
            import threading

            self._gui_thread = threading.get_ident()
            threading.Thread(target=self._sample_loop, daemon=True).start()

    def reset(self) -> None:
        self.longest, self.what, self.longest_samples = 0.0, "", []

    def _sample_loop(self) -> None:
        """Every 2 ms, the GUI thread's Python stack while a dispatch has run over 10 ms."""
        while True:
            time.sleep(0.002)
            if self.depth and time.perf_counter() - self.started > 0.010:
                frame = sys._current_frames().get(self._gui_thread)
                stack = []
                while frame is not None and len(stack) < 4:
                    code = frame.f_code
                    if "/gui/" in code.co_filename or "/core/" in code.co_filename:
                        name = Path(code.co_filename).name
                        stack.append(f"{name}:{frame.f_lineno} {code.co_name}")
                    frame = frame.f_back
                self.samples.append(" < ".join(stack) or "(Qt, no Python frame)")

    def wrap(self, dispatch: Callable[[object, object], bool], receiver, event) -> bool:
        if self.depth == 0:
            self.started, self.samples = time.perf_counter(), []
        self.depth += 1
        start = time.perf_counter()
        try:
            return dispatch(receiver, event)
        finally:
            self.depth -= 1
            took = time.perf_counter() - start
            if self.depth == 0 and took > self.longest:
                self.longest = took
                self.what = f"{type(receiver).__name__} {event.type().name}"
                self.longest_samples = list(self.samples)


def make_app(probe: SlotProbe):
    from PySide6.QtWidgets import QApplication

    class ProbedApplication(QApplication):
        def notify(self, receiver, event):  # noqa: D102 - Qt override
            return probe.wrap(super().notify, receiver, event)

    return ProbedApplication.instance() or ProbedApplication([])


class StageRunner:
    """Posts a stage's actions to the event loop and waits until the stage is done."""

    def __init__(self, app, probe: SlotProbe) -> None:
        self.app = app
        self.probe = probe

    def run(
        self,
        name: str,
        actions: list[Callable[[], object]],
        done: Callable[[], bool] = lambda: True,
        *,
        gap_ms: int = 30,
    ) -> StageFigures:
        """Run ``actions`` one per ``gap_ms`` from the event loop, then wait for ``done()``."""
        from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

        figures = StageFigures(name)
        lateness: list[float] = []
        clock = QElapsedTimer()
        last = [0]

        def tick() -> None:
            now = clock.elapsed()
            lateness.append(max(0, now - last[0] - TICK_MS))
            last[0] = now

        ticker = QTimer()
        ticker.setInterval(TICK_MS)
        ticker.timeout.connect(tick)
        pending = list(actions)
        loop = QEventLoop()
        settle_until = [None]
        start = time.perf_counter()

        def poll() -> None:
            if pending:
                pending.pop(0)()
                return
            if time.perf_counter() - start > STAGE_TIMEOUT_S:
                figures.timed_out = True
                loop.quit()
            elif settle_until[0] is None:
                if done():
                    figures.wall_s = time.perf_counter() - start
                    settle_until[0] = time.perf_counter() + SETTLE_S
            elif time.perf_counter() >= settle_until[0]:
                loop.quit()

        poller = QTimer()
        poller.setInterval(gap_ms if actions else POLL_MS)
        poller.timeout.connect(poll)
        self.app.processEvents()
        reset_peak_rss()
        self.probe.reset()
        clock.start()
        ticker.start()
        poller.start()
        loop.exec()
        poller.stop()
        ticker.stop()
        figures.longest_slot_ms = self.probe.longest * 1000
        figures.longest_slot_what = self.probe.what
        if self.probe.longest_samples:
            from collections import Counter

            n = len(self.probe.longest_samples)
            figures.slot_stacks = [
                f"{count / n:4.0%} {stack}"
                for stack, count in Counter(self.probe.longest_samples).most_common(4)
            ]
        late = np.asarray(lateness[1:] or [0.0])
        figures.lateness_p99_ms = float(np.percentile(late, 99))
        figures.lateness_max_ms = float(late.max())
        figures.peak_rss_mb = peak_rss_mb()
        figures.end_rss_mb = rss_mb()
        if figures.timed_out:
            figures.wall_s = time.perf_counter() - start
        return figures


# --- the flow -----------------------------------------------------------------------------------
def _interactions(viewer) -> dict[str, list[Callable[[], object]]]:
    """Scrolling, window/level drags and overlay toggles on an OrthoViewer."""
    views = viewer.views
    scroll = [lambda s=slot: views[s].step_slice(1) for slot in views for _ in range(10)]
    drag = [lambda d=d: viewer._on_view_window_dragged(d, -d / 2) for d in (4.0, -3.0) * 10]
    overlay = [
        lambda: viewer.set_overlay_visible(False),
        lambda: viewer.set_overlay_visible(True),
        lambda: viewer.set_overlay_mode("difference"),
        lambda: viewer.set_overlay_mode("prediction"),
        lambda: viewer.set_overlay_style(False),
        lambda: viewer.set_overlay_style(True),
        lambda: viewer.set_overlay_mode("both"),
    ]
    return {"scroll": scroll, "window/level": drag, "overlay toggles": overlay}


def run_flow(
    window,
    runner: StageRunner,
    image_path: Path,
    label_path: Path,
    model_path: Path,
    *,
    report: Callable[[StageFigures], None] = lambda figures: None,
) -> list[StageFigures]:
    """Drive ``window`` (a WorkbenchWindow) through the reviewer's flow; one figure per stage."""
    session = window.session
    idle = lambda: not window.runner.is_busy  # noqa: E731
    stages: list[StageFigures] = []

    def stage(name, actions, done=idle, **kwargs) -> None:
        figures = runner.run(name, actions, done, **kwargs)
        stages.append(figures)
        report(figures)

    def results(n: int) -> Callable[[], bool]:
        return lambda: idle() and len(session.results) >= n

    stage(
        "open image",
        [lambda: window.open_image(str(image_path))],
        lambda: idle() and session.image is not None,
    )
    stage(
        "ground truth",
        [lambda: window.open_ground_truth(str(label_path))],
        lambda: idle() and session.ground_truth is not None,
    )
    stage(
        "model",
        [lambda: window.open_model(str(model_path))],
        lambda: idle() and bool(session.variants),
    )
    base = lambda: session.base_variant.name  # noqa: E731
    stage("segment argmax", [lambda: window.run_segmentation_with(base(), "argmax")], results(1))
    stage("segment RMA", [lambda: window.run_segmentation_with(base(), "rma-dice")], results(2))
    for name, actions in _interactions(window.viewer).items():
        stage(name, actions)
    keys = lambda: list(session.results)  # noqa: E731
    stage(
        "switch results",
        [lambda i=i: window.results_table.select(keys()[i % 2]) for i in range(4)],
        gap_ms=100,
    )
    panel = window.quantization_panel

    def quantize() -> None:
        panel.method_combo.setCurrentIndex(panel.method_combo.findData("rtn"))
        panel.bits_spin.setValue(4)
        panel.start_run()

    stage("quantize W4", [quantize], lambda: idle() and len(session.variants) >= 2)
    last_variant = lambda: list(session.variants)[-1]  # noqa: E731
    stage(
        "segment W4 + RMA",
        [lambda: window.run_segmentation_with(last_variant(), "rma-dice")],
        results(3),
    )
    stage("compare", [lambda: window.compare_results(keys()[0], keys()[-1])])
    for name, actions in _interactions(window.compare_viewer.left).items():
        stage(f"compare {name}", actions)
    stage("back to results", [lambda: window.results_table.select(keys()[1])])
    return stages


def _app_startup() -> None:
    """What run_gui does once the window exists (gui.app.freeze_startup_objects, if any)."""
    import gui.app

    freeze = getattr(gui.app, "freeze_startup_objects", None)
    if freeze is not None:
        freeze()


def _close_all(app) -> None:
    """Close every window (an open pyqtgraph item segfaults at interpreter exit otherwise)."""
    for widget in app.topLevelWidgets():
        widget.close()
    app.processEvents()


def measure_flow(
    tree: Path, shape: tuple[int, int, int], cache: Path, sample: bool = False
) -> FlowFigures:
    """Run the flow with the code of ``tree`` in this process."""
    from PySide6.QtCore import QSettings

    from core.demo import demo_paths
    from gui.workbench_window import WorkbenchWindow

    image_path, label_path = phantom_files(shape, cache)
    probe = SlotProbe(sample)
    app = make_app(probe)
    settings = QSettings(str(cache / f"settings_{os.getpid()}.ini"), QSettings.Format.IniFormat)
    window = WorkbenchWindow(settings=settings)
    window.resize(1600, 1000)
    _app_startup()
    window.show()
    app.processEvents()
    flow = FlowFigures(str(tree), shape)
    print(_row_header(), flush=True)
    try:
        flow.stages = run_flow(
            window,
            StageRunner(app, probe),
            image_path,
            label_path,
            demo_paths().model,
            report=lambda figures: print(
                "\n".join([_row(figures), *("      " + line for line in figures.slot_stacks)]),
                flush=True,
            ),
        )
    finally:
        window.runner.cancel_all()
        window.runner.wait()
        window.close()
        _close_all(app)
        Path(settings.fileName()).unlink(missing_ok=True)
    # Resetting VmHWM resets ru_maxrss too: the flow's peak is the largest stage peak.
    flow.peak_rss_mb = max(s.peak_rss_mb for s in flow.stages)
    return flow


# --- printing -----------------------------------------------------------------------------------
def _row_header() -> str:
    return (
        f"{'stage':<26}{'wall s':>8}{'slot ms':>9}{'late p99':>9}{'late max':>9}"
        f"{'peak MB':>9}{'end MB':>8}  longest slot"
    )


def _row(f: StageFigures) -> str:
    flag = " TIMEOUT" if f.timed_out else ""
    return (
        f"{f.name:<26}{f.wall_s:>8.1f}{f.longest_slot_ms:>9.0f}{f.lateness_p99_ms:>9.0f}"
        f"{f.lateness_max_ms:>9.0f}{f.peak_rss_mb:>9.0f}{f.end_rss_mb:>8.0f}  "
        f"{f.longest_slot_what}{flag}"
    )


def print_side_by_side(before: dict, after: dict) -> None:
    """Longest slot, p99 lateness and peak RSS per stage, before | after."""
    print(f"\nbefore: {before['tree']}\nafter:  {after['tree']}")
    print(
        f"{'stage':<26}{'slot ms':>16}{'late p99 ms':>16}{'peak MB':>16}{'wall s':>16}\n"
        f"{'':<26}" + f"{'before':>8}{'after':>8}" * 4
    )
    after_stages = {s["name"]: s for s in after["stages"]}
    for b in before["stages"]:
        a = after_stages.get(b["name"])
        if a is None:
            continue
        cells = ""
        for key, fmt in (
            ("longest_slot_ms", ".0f"),
            ("lateness_p99_ms", ".0f"),
            ("peak_rss_mb", ".0f"),
            ("wall_s", ".1f"),
        ):
            cells += f"{b[key]:>8{fmt}}{a[key]:>8{fmt}}"
        print(f"{b['name']:<26}{cells}")
    worst_b, worst_a = (max(s["longest_slot_ms"] for s in f["stages"]) for f in (before, after))
    peak_b, peak_a = (max(s["peak_rss_mb"] for s in f["stages"]) for f in (before, after))
    print(f"{'whole flow':<26}{worst_b:>8.0f}{worst_a:>8.0f}{'':>16}{peak_b:>8.0f}{peak_a:>8.0f}")
    print(
        f"longest slot after/before: {worst_a / worst_b:.3f}; "
        f"peak RSS after/before: {peak_a / peak_b:.2f}"
    )


# --- threads ------------------------------------------------------------------------------------
def measure_jobs(threads: int, cache: Path, shape: tuple[int, int, int]) -> dict[str, list]:
    """Wall and CPU seconds of inference (a 24-slice slab), RMA (the volume) and readouts."""
    import torch

    from core.demo import demo_paths
    from core.models import load_model, predict
    from core.phantom import make_phantom
    from core.pipeline import decide, summarize_mask

    torch.set_num_threads(threads)
    model = load_model(demo_paths().model)
    image, label = make_phantom(0, shape)
    slab, _ = make_phantom(0, (shape[0], shape[1], 24))
    probs_path = cache / ("probs_" + "x".join(map(str, shape)) + ".npy")
    if not probs_path.exists():
        np.save(probs_path, predict(model, image, device="cpu"))
    probs = np.load(probs_path)

    def timed(fn):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = usage.ru_utime + usage.ru_stime
        start = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return out, [wall, usage.ru_utime + usage.ru_stime - cpu]

    figures = {}
    _, figures["inference (24 slices)"] = timed(lambda: predict(model, slab, device="cpu"))
    (mask, _), figures["RMA decision"] = timed(lambda: decide(probs, "rma-dice"))
    mask = mask.astype(np.uint8)
    _, figures["readouts"] = timed(
        lambda: summarize_mask(
            mask,
            probs,
            spacing=image.spacing,
            class_names=list(model.spec.class_names),
            ground_truth=label,
            intensities=np.asarray(image.array),
        )
    )
    return figures


def app_threads() -> int:
    """The torch threads the app uses on this machine (at least 2, so there is a comparison)."""
    from core.device import gui_torch_threads  # Qt-free: runs on a bare GPU machine too

    return max(2, gui_torch_threads())


def compare_threads(shape: tuple[int, int, int], cache: Path) -> None:
    """Run :func:`measure_jobs` in fresh processes: OpenMP reads its settings at start-up.

    Compares one thread with the app's thread count on this machine (2 on two cores, 15 on a
    16-core machine), under the app's threading settings and under OpenMP's defaults.
    """
    n = app_threads()
    runs = (  # the first run also computes the volume's probabilities once (not timed)
        (f"after: {n} threads", "app", n),
        ("after: 1 thread", "app", 1),
        (f"before: OMP defaults, {n} threads", "default", n),
    )
    results = {}
    for title, policy, threads in runs:
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        out = cache / f"threads_{policy}_{threads}.json"
        command = [
            sys.executable,
            __file__,
            "--jobs-child",
            str(threads),
            "--policy",
            policy,
            "--shape",
            ",".join(map(str, shape)),
            "--cache",
            str(cache),
            "--json",
            str(out),
        ]
        subprocess.run(command, env=env, check=True)
        results[title] = json.loads(out.read_text())
    titles = [title for title, _, _ in reversed(runs)]  # before, after 1, after 2
    print(f"\n{'job':<24}" + "".join(f"{t:>34}" for t in titles) + f"{f'{n} thr / 1 thr':>16}")
    print(f"{'':<24}" + f"{'wall s':>22}{'CPU s':>12}" * len(titles) + f"{'(after, wall)':>16}")
    for job in results[titles[0]]:
        cells = "".join(f"{results[t][job][0]:>22.2f}{results[t][job][1]:>12.2f}" for t in titles)
        ratio = results[titles[2]][job][0] / results[titles[1]][job][0]
        print(f"{job:<24}{cells}{ratio:>16.2f}")
    print(f"the app's torch threads on this machine: {n} (at least 2 for the comparison)")


def apply_app_threading() -> str:
    """Whatever the app's start-up does to OpenMP/torch threading (main.configure_threads)."""
    import main

    configure = getattr(main, "configure_threads", None)
    if configure is None:
        return "none (this tree has no start-up threading settings)"
    configure()
    return f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"


# --- entry point --------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="512,512,300")
    parser.add_argument("--cache", default="/tmp/segbench_bench")
    parser.add_argument("--tree", default=str(HERE), help="the segbench checkout to measure")
    parser.add_argument(
        "--before",
        help="another checkout: measure both, side by side (or the --json file of a run on it)",
    )
    parser.add_argument(
        "--threads", action="store_true", help="1 thread vs the app's threads, per job"
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--sample-slots",
        action="store_true",
        help="sample the GUI thread's stack during each stage's longest slot and print where",
    )
    parser.add_argument("--jobs-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="app", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    if args.jobs_child is not None:
        setting = apply_app_threading() if args.policy == "app" else "OpenMP defaults"
        print(f"jobs with {args.jobs_child} thread(s), {setting}", flush=True)
        Path(args.json).write_text(json.dumps(measure_jobs(args.jobs_child, cache, shape)))
        return
    if args.threads:
        compare_threads(shape, cache)
        return
    if args.before:
        flows = {}
        for label, path in (("before", args.before), ("after", str(tree))):
            if path.endswith(".json"):  # measured earlier: the figures only
                flows[label] = json.loads(Path(path).read_text())
                continue
            out = cache / f"flow_{label}.json"
            command = [
                sys.executable,
                __file__,
                "--tree",
                path,
                "--shape",
                args.shape,
                "--cache",
                str(cache),
                "--json",
                str(out),
            ]
            print(f"--- {label}: {path}", flush=True)
            subprocess.run(command, check=True)
            flows[label] = json.loads(out.read_text())
        print_side_by_side(flows["before"], flows["after"])
        return

    # The flow itself: the GUI's own figures, with the jobs kept polite on a shared machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)
    import core

    print(f"flow on {shape} with {Path(core.__file__).parents[1]}", flush=True)
    flow = measure_flow(tree, shape, cache, args.sample_slots)
    print(f"peak RSS of the whole flow (largest stage peak): {flow.peak_rss_mb:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(flow)))


if __name__ == "__main__":
    main()
