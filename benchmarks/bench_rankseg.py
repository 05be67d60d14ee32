"""Side-by-side benchmark of segmentation decision rules on synthetic probability maps.

Run ``python benchmarks/bench_rankseg.py`` (add ``--device cuda`` on a GPU machine, ``--quick``
to skip the 1x3x512x512x300 volume). Every case runs in a fresh subprocess with one torch
thread; inside it the rules run side by side on the same input. Printed per rule:

- time and its ratio to argmax on the same input (best of the repeats);
- extra peak memory: peak resident set size during the first call minus the resident size
  just before it (Linux: glibc's malloc_trim hands freed memory back, the peak is reset by
  writing 5 to /proc/self/clear_refs, then read from VmHWM in /proc/self/status), so it sees
  torch allocations. On CUDA the figure is
  torch.cuda.max_memory_allocated minus the memory allocated before the call;
- mean Dice and IoU (per item and class, classes absent from both left out) against a ground
  truth sampled from the probability map itself, and the mean exact expected Dice of the
  decision under the same model (core.seg.expected_dice).

The PyPI package ``rankseg`` (optional; ``pip install --no-deps rankseg==0.0.8``) runs with
``safe_screening`` False and True when installed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

CASES = {
    # name: (shape, kind)
    "binary 1x1x512x512": ((1, 1, 512, 512), "sigmoid"),
    "multiclass 4x21x512x512": ((4, 21, 512, 512), "softmax"),
    "3-D 1x3x128x128x128": ((1, 3, 128, 128, 128), "softmax"),
    "3-D 1x3x512x512x300": ((1, 3, 512, 512, 300), "softmax"),
}
BIG = "3-D 1x3x512x512x300"


def smooth_field(shape, cells, generator, device):
    """Gaussian noise on a coarse grid, interpolated up: a smooth random field."""
    coarse = torch.randn((shape[0], shape[1], *cells), generator=generator).to(device)
    mode = "bilinear" if len(cells) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)


def make_logits(shape, generator, device):
    """Per-class logits: smooth background fields plus soft-edged objects and faint small ones."""
    B, C, *spatial = shape
    ndim = len(spatial)
    logits = 1.5 * smooth_field(shape, [max(2, s // 64) for s in spatial], generator, device)
    # 1-D coordinates shaped to broadcast: no full-size coordinate grids in memory.
    grids = [
        torch.linspace(0, 1, s, device=device).reshape([-1 if a == i else 1 for a in range(ndim)])
        for i, s in enumerate(spatial)
    ]
    first = 1 if C > 1 else 0  # class 0 of a softmax map is background
    if C > 1:
        logits[:, 0] += 3.0
    for b in range(B):
        for c in range(first, C):
            count = int(torch.randint(1, 4, (1,), generator=generator))
            for k in range(count + 2):
                faint = k >= count  # the last two objects of each class are small and faint
                centre = torch.rand(ndim, generator=generator)
                radius = (0.02 + 0.03 * torch.rand(ndim, generator=generator)) * (1 if faint else 3)
                dist = sum(
                    ((g - float(m)) / float(r)) ** 2
                    for g, m, r in zip(grids, centre, radius, strict=True)
                )
                strength = 2.0 if faint else 9.0
                # logit rises inside the ellipse with a soft edge about a tenth of its radius
                logits[b, c] += strength * torch.sigmoid((1 - dist.sqrt()) * 10) - (
                    0 if faint else 1.0
                )
    return logits


def make_case(name, device):
    shape, kind = CASES[name]
    generator = torch.Generator().manual_seed(1234)
    logits = make_logits(shape, generator, device)
    if kind == "sigmoid":
        probs = torch.sigmoid_(logits - 3.0)
        truth = torch.rand(probs.shape, generator=generator).to(device) < probs
        return probs, truth, True
    probs = torch.softmax(logits, dim=1)
    del logits
    # Sample one class per pixel from the map, slab by slab to bound memory.
    truth = torch.empty((shape[0], *shape[2:]), dtype=torch.int64, device=device)
    flat_p = probs.reshape(shape[0], shape[1], -1)
    flat_t = truth.reshape(shape[0], -1)
    step = 1 << 20
    for start in range(0, flat_p.shape[-1], step):
        part = flat_p[:, :, start : start + step]
        u = torch.rand((shape[0], 1, part.shape[-1]), generator=generator).to(device)
        flat_t[:, start : start + step] = (part.cumsum(1) < u).sum(1).clamp_max(shape[1] - 1)
    return probs, truth, False


def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(fn, device, repeats):
    """Best time over repeats and extra peak memory (MiB) of the first call."""
    import gc

    gc.collect()
    # Hand freed heap memory back to the system first, so that the resident size before the
    # call does not include memory that the previous rule freed but glibc kept (which this
    # call could reuse without raising the peak).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = rss_kib("VmRSS") * 1024
    best = np.inf
    result = None
    spent = 0.0
    i = 0
    # Fast rules repeat until about 0.3 s is spent (at most 50 runs), slow ones `repeats`
    # times: the best time is reported, the memory of the first run.
    while i < repeats or (spent < 0.3 and i < 50):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if i == 0:
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated()
            else:
                peak = rss_kib("VmHWM") * 1024
            if repeats == 1:
                break
        i += 1
    return result, best, max(0, peak - before) / 2**20


def score(decision, probs, truth, multilabel):
    from core.metrics import dice_score, iou_score
    from core.seg import expected_dice

    C = probs.shape[1]
    d = dice_score(decision, truth, num_classes=C, empty=float("nan"))
    j = iou_score(decision, truth, num_classes=C, empty=float("nan"))
    e = expected_dice(probs, decision, empty=float("nan"))
    return [float(np.nanmean(np.asarray(x, dtype=np.float64))) for x in (d, j, e)]


def run_case(name, device_name):
    from core.seg import argmax_decision, rankseg_rma, threshold_decision

    torch.set_num_threads(1)
    device = torch.device(device_name)
    probs, truth, multilabel = make_case(name, device)
    big = name == BIG
    repeats = 1 if big else 3
    rules = [("argmax", lambda: argmax_decision(probs, multilabel=multilabel))]
    if not big:
        rules.append(("threshold 0.5", lambda: threshold_decision(probs, 0.5, multilabel=True)))
    modes = [True] if multilabel else [False, True]
    for metric in ("dice", "iou"):
        for ml in modes:
            if big and (ml or metric == "iou"):
                continue
            label = f"ours {metric} {'multilabel' if ml else 'multiclass'}"
            rules.append(
                (label, lambda m=metric, ml=ml: rankseg_rma(probs, metric=m, multilabel=ml))
            )
    try:
        import rankseg
    except ImportError:
        rankseg = None
    if rankseg is not None and not big:
        mode = "multilabel" if multilabel else "multiclass"
        for metric in ("dice", "iou"):
            for screen in (False, True):
                if screen and metric == "iou":
                    continue  # the package screens Dice only; iou would repeat the full sort
                rules.append(
                    (
                        f"rankseg {metric} {mode}{' screened' if screen else ''}",
                        lambda m=metric, s=screen: rankseg.rankseg_rma(
                            probs, metric=m, output_mode=mode, safe_screening=s
                        ),
                    )
                )
    rows = []
    for label, fn in rules:
        slow = label.startswith("rankseg")
        decision, seconds, extra = measure(fn, device, 1 if slow else repeats)
        target = truth
        if decision.dtype == torch.bool and not multilabel:
            target = torch.nn.functional.one_hot(truth, probs.shape[1]).movedim(-1, 1).bool()
        elif decision.dtype != torch.bool and multilabel:
            continue
        quality = score(decision, probs, target, decision.dtype == torch.bool)
        rows.append(dict(rule=label, seconds=seconds, extra_mib=extra, quality=quality))
        del decision, target
    input_mib = probs.numel() * probs.element_size() / 2**20
    return dict(case=name, input_mib=input_mib, rows=rows)


def print_table(result):
    rows = result["rows"]
    base = next(r["seconds"] for r in rows if r["rule"] == "argmax")
    print(f"\n== {result['case']}  (input {result['input_mib']:.0f} MiB)")
    print(
        f"{'rule':34s} {'time ms':>9s} {'x argmax':>9s} {'extra MiB':>10s} "
        f"{'Dice':>7s} {'IoU':>7s} {'E[Dice]':>8s}"
    )
    for r in rows:
        d, j, e = r["quality"]
        print(
            f"{r['rule']:34s} {r['seconds'] * 1000:9.2f} {r['seconds'] / base:9.2f} "
            f"{r['extra_mib']:10.0f} {d:7.4f} {j:7.4f} {e:8.4f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="skip the 512x512x300 volume")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.device)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    for name in CASES:
        if args.quick and name == BIG:
            continue
        cmd = [sys.executable, __file__, "--case", name, "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            print(f"\n== {name}: failed\n{out.stderr[-2000:]}")
            continue
        print_table(json.loads(out.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
