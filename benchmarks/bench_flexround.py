"""FlexRound vs AdaRound vs round-to-nearest on two segmentation networks and a classifier.

Usage::

    python benchmarks/bench_flexround.py [--networks demo fcn digits]
        [--parts layers lr compare ablate] [--iters 500] [--calib 64] [--crop 64]
        [--digit-noise 0.25] [--granularity tensor] [--seeds 0 1 2] [--bits 4 3 2]

Networks (``benchmarks/flexround_models.py``): the demo 2-D U-Net, a dilated residual FCN
trained here on phantoms (both scored by foreground Dice) and a 6-layer CNN trained here on
scikit-learn's 8x8 digits (``digits``, top-1 accuracy; its calibration samples are whole
training digits, so ``--crop`` and ``--calib-volumes`` do not apply). Weights per tensor (or
``--granularity channel``), first and last layer 8 bit. Parts:

``layers``
    The 8-bit layers before and after the fix: layer-wise reconstruction at W4 (first and last
    layer 8 bit) and W8 with the old unscaled learning rate (1e-2 on every log factor) and with
    the default (grid levels per step, scaled per layer by 1 / reach): each layer's held-out
    error against the float layer at round-to-nearest, at the worst and the last checkpoint and
    in the kept result, and the share of codes moved.
``lr``
    Each learned method's learning rate chosen at W2 by the mean over the seeds of the
    agreement with the float model on a calibration split (slices of another training phantom,
    or held-out training digits; no labels, never the test data). Later parts use the chosen
    rates.
``compare``
    Every method at each bit width over the seeds: test score mean and spread, FlexRound -
    AdaRound per bit width (paired by seed) with its spread, time.
``ablate``
    FlexRound at W2 over the seeds: the chosen rate against twice the iterations, QDrop
    (p 0.5), layer instead of block reconstruction, half the rate, a learned grid size s1 (the
    paper's setting; the default keeps the range search's), and AdaRound with layer
    reconstruction (``--ablations`` picks some).

Spreads are population standard deviations over seeds. Runs are single-threaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from flexround_models import NETWORKS, ClassifierNetwork, Network, digits_network  # noqa: E402

from core.quant import QuantConfig, quantize_model  # noqa: E402
from core.quant.config import DEFAULT_ITERS, DEFAULT_LR  # noqa: E402
from core.quant.quantizers import FlexRoundQuantizer  # noqa: E402

METHODS = ("rtn-minmax", "rtn", "adaround", "flexround")
LEARNED = ("adaround", "flexround")
LR_CANDIDATES = {"flexround": (1e-2, 2e-2, 5e-2, 1e-1), "adaround": (3e-2, 1e-1, 3e-1)}
PARTS = ("layers", "lr", "compare", "ablate")


def spread(values: list[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


@contextlib.contextmanager
def unscaled_flexround_lr():
    """The learning rate before the fix: every log factor at the configured rate, all bits."""
    original = FlexRoundQuantizer.lr_scale
    FlexRoundQuantizer.lr_scale = lambda self: 1.0
    try:
        yield
    finally:
        FlexRoundQuantizer.lr_scale = original


class Bench:
    """Runs quantizations of one network with the common settings and scores them."""

    def __init__(self, network: Network | ClassifierNetwork, args: argparse.Namespace) -> None:
        self.network = network
        self.args = args
        self.fp_module = network.module.eval()
        self.fp_split = network.predict(self.fp_module, network.split_inputs)
        self.fp_score = network.test_score(self.fp_module)
        self.lr = dict(DEFAULT_LR)

    def config(self, method: str, bits: int, seed: int, **changes) -> QuantConfig:
        base = QuantConfig(
            method=method,
            bits=bits,
            iters=self.args.iters,
            batch_size=self.args.batch,
            seed=seed,
            device="cpu",
            lr=self.lr.get(method),
            granularity=self.args.granularity,
        )
        return replace(base, **changes)

    def run(self, config: QuantConfig):
        calib = self.network.calibration(
            self.args.calib, self.args.crop, config.seed, self.args.calib_volumes
        )
        clock = time.process_time()
        result = quantize_model(self.network.model, calib, config)
        return result, time.process_time() - clock

    def scores(self, config: QuantConfig) -> tuple[float, float, float]:
        """(test score, calibration-split agreement, CPU seconds) of one run."""
        result, cpu = self.run(config)
        module = result.model.eval()
        agreement = self.network.split_agreement(module, self.fp_split)
        return self.network.test_score(module), agreement, cpu


def part_layers(bench: Bench) -> None:
    print(
        "\n[layers] 8-bit layers, layer-wise reconstruction, seed 0: held-out error against the "
        "float layer\n  (RTN start, worst and last checkpoint, kept result, % codes moved, "
        "% moved 2+ levels)"
    )
    settings = (
        ("1e-2 unscaled (old)", 1e-2, unscaled_flexround_lr),
        (f"{bench.lr['flexround']:g} levels (new)", bench.lr["flexround"], contextlib.nullcontext),
    )
    for bits in (4, 8):
        for label, lr, patch in settings:
            with patch():
                result, _ = bench.run(
                    bench.config("flexround", bits, 0, reconstruction="layer", lr=lr)
                )
            ratios = []
            for layer in result.layers:
                losses = [c.layer_losses[layer.name] for c in result.checkpoints[layer.name]]
                ratios.append((losses[-1] / losses[0], max(losses) / losses[0], layer.name))
                if bits == 4 and layer.bits == 8:
                    kept = "nearest" if layer.kept_nearest else "learned"
                    print(
                        f"  W4 {layer.name:<17} {label:<21} RTN {losses[0]:.3e}  worst "
                        f"{max(losses):.3e}  last {losses[-1]:.3e}  kept {layer.loss_after:.3e} "
                        f"({kept})  {100 * layer.frac_changed:5.1f} % moved, "
                        f"{100 * layer.frac_moved_2plus:4.1f} % 2+"
                    )
            if bits == 8:
                worse = sum(r[0] > 1 for r in ratios)
                last, worst = max(ratios), max(ratios, key=lambda r: r[1])
                kept_ok = all(r.loss_after <= r.loss_before for r in result.layers)
                print(
                    f"  W8 all layers, {label:<21}: {worse}/{len(ratios)} layers end above RTN, "
                    f"worst last/RTN {last[0]:.2f}x ({last[2]}), worst checkpoint/RTN "
                    f"{worst[1]:.2f}x ({worst[2]}); kept <= RTN everywhere: {kept_ok}"
                )
            sys.stdout.flush()


def part_lr(bench: Bench) -> None:
    seeds = bench.args.seeds
    print(
        f"\n[lr] learning rate per method at W2, chosen by the mean calibration-split agreement "
        f"over seeds {seeds}"
    )
    for method in LEARNED:
        best = None
        for lr in getattr(bench.args, f"{method}_lrs") or LR_CANDIDATES[method]:
            rows = [bench.scores(bench.config(method, 2, seed, lr=lr)) for seed in seeds]
            agreement = statistics.mean(100 * r[1] for r in rows)
            print(
                f"  {method:<10} lr {lr:<7g} split agreement {agreement:6.2f} "
                f"+-{spread([100 * r[1] for r in rows]):4.2f}  (test {bench.network.metric} "
                f"{statistics.mean(100 * r[0] for r in rows):6.2f}, not used)",
                flush=True,
            )
            if best is None or agreement > best[0]:
                best = (agreement, lr)
        bench.lr[method] = best[1]
        print(f"  -> {method} lr {best[1]:g}")


def part_compare(bench: Bench) -> None:
    args = bench.args
    lrs = ", ".join(f"{m} {bench.lr[m]:g}" for m in LEARNED)
    metric = bench.network.metric
    print(f"\n[compare] test {metric} per bit width (lr: {lrs}); FP32 {100 * bench.fp_score:.2f}")
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for bits in args.bits:
        for seed in args.seeds:
            for method in METHODS:
                if method not in LEARNED and seed != args.seeds[0]:
                    continue  # nothing seeded in round-to-nearest: one run is enough
                score, _agreement, cpu = bench.scores(bench.config(method, bits, seed))
                results.setdefault((method, bits), []).append((100 * score, cpu))
                print(
                    f"  W{bits} {method:<10} seed {seed}: {metric} {100 * score:6.2f} "
                    f"cpu {cpu:.1f} s"
                )
    print(f"  {'method':<11}" + "".join(f"{'W' + str(b):>16}" for b in args.bits) + "   cpu s")
    for method in METHODS:
        cells = ""
        for bits in args.bits:
            scores = [d for d, _ in results[(method, bits)]]
            cells += f"{statistics.mean(scores):>9.2f} +-{spread(scores):4.2f}"
        cpu = statistics.mean(c for b in args.bits for _, c in results[(method, b)])
        print(f"  {method:<11}{cells}{cpu:>8.1f}")
    for bits in args.bits:
        diffs = [
            f[0] - a[0]
            for f, a in zip(results[("flexround", bits)], results[("adaround", bits)], strict=True)
        ]
        print(
            f"  FlexRound - AdaRound W{bits}: {statistics.mean(diffs):+.2f} +- {spread(diffs):.2f} "
            f"{metric} points (per seed: {', '.join(f'{d:+.2f}' for d in diffs)})"
        )
    if 4 in args.bits:
        gap = 100 * bench.fp_score - statistics.mean(d for d, _ in results[("flexround", 4)])
        side = "below" if gap >= 0 else "above"
        print(f"  FlexRound W4: {abs(gap):.2f} {metric} points {side} FP32")


def ablations(bench: Bench) -> dict[str, tuple[str, str, dict]]:
    """Key -> (label, method, config changes) of every W2 ablation."""
    args = bench.args
    return {
        "default": ("flexround default", "flexround", {}),
        "iters": (f"flexround iters {2 * args.iters}", "flexround", {"iters": 2 * args.iters}),
        "qdrop": ("flexround QDrop 0.5", "flexround", {"qdrop_prob": 0.5}),
        "layer": ("flexround layer-wise", "flexround", {"reconstruction": "layer"}),
        "lr": ("flexround lr x0.5", "flexround", {"lr": 0.5 * bench.lr["flexround"]}),
        "grid": ("flexround learned s1", "flexround", {"learn_grid": True}),
        "adaround-layer": ("adaround layer-wise", "adaround", {"reconstruction": "layer"}),
    }


def part_ablate(bench: Bench) -> None:
    args = bench.args
    every = ablations(bench)
    variants = [every[key] for key in args.ablations or every]
    print(f"\n[ablate] W2, seeds {args.seeds}: test {bench.network.metric} (split agreement)")
    for label, method, changes in variants:
        rows = [bench.scores(bench.config(method, 2, s, **changes)) for s in args.seeds]
        scores = [100 * r[0] for r in rows]
        agreements = [100 * r[1] for r in rows]
        print(
            f"  {label:<24} {statistics.mean(scores):6.2f} +-{spread(scores):4.2f}  "
            f"({statistics.mean(agreements):6.2f} +-{spread(agreements):4.2f})  "
            f"cpu {statistics.mean(r[2] for r in rows):5.1f} s",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--iters",
        type=int,
        default=DEFAULT_ITERS,
        help=f"optimizer steps per block (default {DEFAULT_ITERS}, the app's)",
    )
    parser.add_argument("--calib", type=int, default=64, help="calibration patches")
    parser.add_argument("--crop", type=int, default=64, help="calibration patch size")
    parser.add_argument(
        "--calib-volumes",
        type=int,
        default=1,
        choices=range(1, 5),
        metavar="N",
        help="training phantoms the calibration patches come from (1: phantom 1; 2: and 3; "
        "3: and 4; 4: and 5)",
    )
    parser.add_argument("--batch", type=int, default=8, help="batch size")
    parser.add_argument(
        "--digit-noise",
        type=float,
        default=0.25,
        help="standard deviation of the Gaussian noise added to the digits (intensities 0-1; "
        "default 0.25: FP32 93 %% top-1; the clean digits saturate, W2 matches FP32)",
    )
    parser.add_argument(
        "--granularity",
        choices=("tensor", "channel"),
        default="tensor",
        help="weight grid per tensor (default, the issue's setting) or per output channel",
    )
    parser.add_argument(
        "--ablations",
        nargs="+",
        choices=("default", "iters", "qdrop", "layer", "lr", "grid", "adaround-layer"),
        help="W2 ablations the ablate part runs (default: all)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3, 2])
    for method in LEARNED:
        parser.add_argument(
            f"--{method}-lrs",
            type=float,
            nargs="+",
            help=f"{method} rates the lr part chooses from (default {LR_CANDIDATES[method]})",
        )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for key in args.networks:
        network = digits_network(args.digit_noise) if key == "digits" else NETWORKS[key]()
        bench = Bench(network, args)
        calibration = network.describe_calibration(args.calib, args.crop, args.calib_volumes)
        print(
            f"\n=== {network.source}: FP32 test {network.metric} {100 * bench.fp_score:.2f}; "
            f"iters/block {args.iters}, {calibration}, batch {args.batch}, per "
            f"{args.granularity}, first/last 8 bit, block reconstruction, 1 thread",
            flush=True,
        )
        for part in PARTS:
            if part in args.parts:
                globals()[f"part_{part}"](bench)
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
