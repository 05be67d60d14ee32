"""Probability calibration before RankSEG-RMA: argmax, RMA, calibrated RMA and guarded RMA.

Run ``python benchmarks/bench_calibration.py`` (``--only demo,natural`` skips the large
volume; ``--large-shape 256 256 150`` measures a smaller one; ``--large-splits demo-size`` skips
the large setting's same-size splits; ``--cache DIR`` keeps the network's probabilities between
runs). One torch thread. Rows are also logged on stderr as they are measured.

Settings (every test case is held out: no seed is shared with training or calibration):

- ``demo``: the CT demo model on the demo volume (phantom seed 1000, 160x160x48); each
  calibration split is 3 phantoms of the demo's size (seeds 100+10s .. 102+10s, s = 0, 1, 2).
- ``large, demo-size split``: the same model on a phantom of the same generator with a
  held-out seed (2000) at ``--large-shape`` (default 512x512x300), calibrated on the demo-size
  splits above: what a user gets when the calibration cases are smaller than the test case.
- ``large, same-size split``: the same test volume, each split one phantom of the same shape
  (seeds 2001 + s).
- ``natural``: the RGB demo model on the natural demo image (scene seed 1000) and 9 more
  held-out scenes (2000-2008); each split is 8 scenes (seeds 100+10s .. 107+10s).

Rules: argmax and RankSEG-RMA (Dice, pruning 0.5) on the raw probabilities; then per split,
with temperature scaling (T) and with per-class vector scaling (V): argmax and RMA on the
calibrated probabilities, and the guarded rule (per class RMA or argmax and RMA's pruning,
learned on the split). Dice per class is averaged over the test cases; "worst" is the lowest
per-class difference to raw argmax (in Dice points, i.e. x100), the target being >= -0.2
with a positive mean difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.demo import demo_paths  # noqa: E402
from core.metrics import dice_score  # noqa: E402
from core.models import load_model, predict  # noqa: E402
from core.phantom import make_phantom, make_texture_scene  # noqa: E402
from core.pipeline import decide  # noqa: E402
from core.probability_calibration import (  # noqa: E402
    calibrate_probabilities,
    guard_for_case,
    model_argmax,
)
from core.probability_calibration.model_fit import (  # noqa: E402
    case_loader,
    fit_from_probabilities,
)

SPLITS = 3


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Cases:
    """Probabilities of a model on generated cases, optionally cached as .npy files."""

    def __init__(self, model, tag: str, cache: Path | None) -> None:
        self.model = model
        self.tag = tag
        self.cache = cache
        self.memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, name: str, make):
        if name not in self.memory:
            self.memory[name] = self._load_or_predict(name, make)
        return self.memory[name]

    def _load_or_predict(self, name: str, make):
        path = None if self.cache is None else self.cache / f"{self.tag}_{name}"
        if path is not None and Path(f"{path}_p.npy").exists():
            return np.load(f"{path}_p.npy"), np.load(f"{path}_y.npy")
        start = time.perf_counter()
        image, truth = make()
        probs = predict(self.model, image, device="cpu")
        log(f"{self.tag} {name}: {image.shape3} predicted in {time.perf_counter() - start:.0f} s")
        truth = np.asarray(truth).reshape(probs.shape[1:]).astype(np.uint8)
        if path is not None:
            np.save(f"{path}_p.npy", probs)
            np.save(f"{path}_y.npy", truth)
        return probs, truth


def class_dice(mask: np.ndarray, truth: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(dice_score(mask[None], truth[None], num_classes=n))[0]


def evaluate(tests, rule, n: int, calibration=None, activation="softmax") -> np.ndarray:
    """Mean Dice per class over the test cases of one rule (on calibrated copies if given)."""
    scores = []
    multilabel = activation == "sigmoid"
    for probs, truth in tests:
        guard = calibration.guard if calibration is not None else None
        own = None
        if rule == "guarded" and guard is not None:
            # As segment_image does: the model's own argmax (before a vector scaling moves
            # it), and RMA only for classes no rarer here than on the calibration cases.
            own = model_argmax(probs, multilabel=multilabel)
            guard, _notes = guard_for_case(guard, own, multilabel=multilabel)
        if calibration is not None:
            probs = calibrate_probabilities(probs.copy(), calibration, activation)
        mask, _ = decide(probs, rule, guard=guard, multilabel=multilabel, model_decision=own)
        scores.append(class_dice(mask, truth, n))
        del probs, mask
    return np.mean(scores, axis=0)


def run_setting(title, names, tests, splits, activation, rows) -> None:
    """Raw rules once, then fits and calibrated rules per split; appends table rows."""
    n = len(names)
    raw = {rule: evaluate(tests, rule, n) for rule in ("argmax", "rma-dice")}
    rows.append((title, "-", "argmax", raw["argmax"], raw["argmax"]))
    rows.append((title, "-", "rma", raw["rma-dice"], raw["argmax"]))
    log(f"{title}\n{format_row(rows[-2])}\n{format_row(rows[-1])}")
    for index, split in enumerate(splits):
        for vector in (False, True):
            start = time.perf_counter()
            fit = fit_from_probabilities(
                split(), class_names=names, activation=activation, vector=vector
            )
            cal = fit.calibration
            tag = "V" if vector else "T"
            log(
                f"{title} split {index} {tag}: T={cal.temperature:.3f} rules {cal.guard.rules} "
                f"pruning {cal.guard.pruning} ({time.perf_counter() - start:.0f} s)"
            )
            label = f"{index} (T={cal.temperature:.2f})" if not vector else f"{index}"
            for rule, name in (("argmax", "argmax"), ("rma-dice", "rma"), ("guarded", "guarded")):
                scores = evaluate(tests, rule, n, cal, activation)
                rows.append((title, label, f"{tag}-{name}", scores, raw["argmax"]))
            rows[-1] = (*rows[-1][:3], rows[-1][3], raw["argmax"], cal.guard.rules)
            log("\n".join(format_row(row) for row in rows[-3:]))


def format_row(row) -> str:
    """One table line: split, rule, mean foreground Dice, per class, worst and mean change."""
    split, rule, scores, argmax = row[1:5]
    fg = scores[1:]
    delta = (fg - argmax[1:]) * 100
    cells = "  ".join(f"{v:8.4f}" for v in fg)
    rules = f"  rules: {','.join(r[0] for r in row[5])}" if len(row) > 5 else ""
    return (
        f"{split:<12} {rule:<10} {fg.mean():8.4f}  {cells}  {delta.min():+7.2f}  "
        f"{delta.mean():+.2f}{rules}"
    )


def print_table(rows, names_by_title) -> None:
    last = None
    for row in rows:
        title = row[0]
        if title != last:
            header = "  ".join(f"{name[:8]:>8}" for name in names_by_title[title][1:])
            columns = f"{'split':<12} {'rule':<10} {'mean fg':>8}  {header}  {'worst':>7}  mean"
            print(f"\n{title}\n{columns}")
            last = title
        print(format_row(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="demo,large,natural", help="settings to run")
    parser.add_argument("--large-shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument(
        "--large-splits",
        choices=("both", "demo-size", "same-size"),
        default="both",
        help="the large setting's splits (same-size: 3 more large phantoms to predict)",
    )
    parser.add_argument("--cache", type=Path, help="folder keeping predicted probabilities")
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = set(args.only.split(","))
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
    paths = demo_paths()
    rows: list = []
    names_by_title: dict[str, list[str]] = {}
    if only & {"demo", "large"}:
        model = load_model(paths.model)
        names = list(model.spec.class_names)
        ct = Cases(model, "ct", args.cache)

        def small_split(s):
            return lambda: [
                ct.get(f"s{100 + 10 * s + i}", lambda seed=100 + 10 * s + i: make_phantom(seed))
                for i in range(3)
            ]

        if "demo" in only:
            title = "CT demo volume (160x160x48), demo-size splits"
            names_by_title[title] = names
            tests = [ct.get("demo", case_loader(paths.image, paths.label))]
            run_setting(
                title, names, tests, [small_split(s) for s in range(SPLITS)], "softmax", rows
            )
        if "large" in only:
            shape = tuple(args.large_shape)
            size = "x".join(map(str, shape))

            def large(seed):
                return ct.get(f"l{seed}_{size}", lambda: make_phantom(seed, shape=shape))

            tests = [large(2000)]
            if args.large_splits != "same-size":
                title = f"CT phantom {size} (seed 2000), demo-size splits"
                names_by_title[title] = names
                splits = [small_split(s) for s in range(SPLITS)]
                run_setting(title, names, tests, splits, "softmax", rows)
            if args.large_splits != "demo-size":
                title = f"CT phantom {size} (seed 2000), same-size splits (1 phantom each)"
                names_by_title[title] = names
                splits = [lambda s=s: [large(2001 + s)] for s in range(SPLITS)]
                run_setting(title, names, tests, splits, "softmax", rows)
    if "natural" in only:
        model = load_model(paths.natural_model)
        names = list(model.spec.class_names)
        rgb = Cases(model, "rgb", args.cache)

        tests = [rgb.get("demo", case_loader(paths.natural_image, paths.natural_label))]
        tests += [
            rgb.get(f"t{seed}", lambda seed=seed: make_texture_scene(seed))
            for seed in range(2000, 2009)
        ]
        splits = [
            lambda s=s: [
                rgb.get(f"s{seed}", lambda seed=seed: make_texture_scene(seed))
                for seed in range(100 + 10 * s, 108 + 10 * s)
            ]
            for s in range(SPLITS)
        ]
        title = "natural demo + 9 held-out scenes (192x192), 8-scene splits"
        names_by_title[title] = names
        run_setting(title, names, tests, splits, "softmax", rows)
    print(
        "\nDice per foreground class (mean over test cases); worst / mean: difference to raw "
        "argmax in Dice points (x100).\nT-: temperature scaling, V-: per-class vector "
        "scaling; guarded rules per class (r = RMA, a = argmax), background first."
    )
    print_table(rows, names_by_title)


if __name__ == "__main__":
    main()
