"""Regenerate the embedded demos: images, labels and small 2-D U-Nets trained on them.

Usage::

    python tools/train_demo_model.py [--which both|ct|natural] [--out resources/demo]
                                     [--iterations 800] [--natural-iterations 500] [--threads 2]

CT demo: trains on CT phantoms with seeds 1..8, writes the held-out phantom (seed 1000) as
``image.nii.gz`` / ``label.nii.gz``, the model as ``model/`` (``model.json`` +
``model.safetensors``) and ``model/metrics.json`` with the held-out argmax Dice per class.

Natural-image demo: trains on texture scenes (seeds 1..60) and writes the held-out scene (seed
1000) as ``natural/image.png`` / ``natural/label.png`` with ``natural/model/``.

Each prints its held-out Dice. Everything is seeded; on 2 CPU cores both take under 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.io.image import Image  # noqa: E402
from core.models import LoadedModel, ModelSpec, UNet, model_input, predict, save_model  # noqa: E402
from core.phantom import (  # noqa: E402
    PHANTOM_CLASSES,
    SCENE_CLASSES,
    make_phantom,
    make_texture_scene,
)

TRAIN_SEEDS = tuple(range(1, 9))
HELD_OUT_SEED = 1000
CROP = 96
BATCH = 16
SEED = 0

SPEC = ModelSpec(
    architecture="unet",
    arguments={"dims": 2, "base_channels": 12, "depth": 3, "norm": "batch", "residual": False},
    in_channels=1,
    class_names=PHANTOM_CLASSES,
    class_colors=((0, 0, 0), (220, 120, 60), (70, 160, 230), (250, 230, 40)),
    activation="softmax",
    preprocessing=({"name": "ct_window", "center": 40.0, "width": 400.0},),
    mode="2d",
    patch_size=None,
    size_divisor=8,
    name="demo-ct-unet",
    description=(
        "2-D slice-wise U-Net (base 12, depth 3, batch norm) trained by "
        "tools/train_demo_model.py on synthetic CT phantoms (core.phantom, seeds 1-8); "
        "classes background, liver-like organ, kidney-like organs, faint small lesions."
    ),
)


NATURAL_TRAIN_SEEDS = tuple(range(1, 61))

NATURAL_SPEC = ModelSpec(
    architecture="unet",
    arguments={"dims": 2, "base_channels": 12, "depth": 3, "norm": "batch", "residual": False},
    in_channels=3,
    class_names=SCENE_CLASSES,
    class_colors=((0, 0, 0), (255, 80, 80), (80, 200, 255)),
    activation="softmax",
    preprocessing=({"name": "rgb_meanstd"},),
    mode="2d",
    patch_size=None,
    size_divisor=8,
    name="demo-rgb-unet",
    description=(
        "2-D U-Net (base 12, depth 3, batch norm) trained by tools/train_demo_model.py on "
        "synthetic scenes (core.phantom.make_texture_scene, seeds 1-60): random-coloured discs "
        "and boxes composited onto scikit-image's brick, grass and gravel photographs."
    ),
)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` with ``affine`` as scanner-coordinate NIfTI (qform and sform set)."""
    nii = nib.Nifti1Image(array, affine)
    nii.header.set_xyzt_units("mm", "sec")
    nii.set_qform(affine, code=1)
    nii.set_sform(affine, code=1)
    nib.save(nii, str(path))


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, num_classes: int) -> list[float]:
    """Dice 2|A and B| / (|A| + |B|) per class; 1.0 when both are empty."""
    scores = []
    for c in range(num_classes):
        a, b = prediction == c, truth == c
        denominator = int(a.sum()) + int(b.sum())
        scores.append(1.0 if denominator == 0 else 2.0 * int((a & b).sum()) / denominator)
    return scores


def sample_batch(
    inputs: list[np.ndarray],
    labels: list[np.ndarray],
    rng: np.random.Generator,
    focus_class: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 96x96 crops of slices; half are centred near a ``focus_class`` voxel (if given)."""
    xs, ys = [], []
    for index in range(BATCH):
        volume = int(rng.integers(len(inputs)))
        x, y = inputs[volume], labels[volume]
        want_focus = focus_class is not None and index % 2 == 0
        lesion = np.argwhere(y == focus_class) if want_focus else np.empty((0, 3))
        if len(lesion):
            ci, cj, k = lesion[rng.integers(len(lesion))]
            i0 = int(np.clip(ci - rng.integers(16, CROP - 16), 0, y.shape[0] - CROP))
            j0 = int(np.clip(cj - rng.integers(16, CROP - 16), 0, y.shape[1] - CROP))
        else:
            k = int(rng.integers(y.shape[2]))
            i0 = int(rng.integers(y.shape[0] - CROP + 1))
            j0 = int(rng.integers(y.shape[1] - CROP + 1))
        xs.append(x[:, i0 : i0 + CROP, j0 : j0 + CROP, k])
        ys.append(y[i0 : i0 + CROP, j0 : j0 + CROP, k])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))


def loss_fn(logits: torch.Tensor, target: torch.Tensor, with_dice: bool) -> torch.Tensor:
    """Cross-entropy, optionally plus soft Dice over the foreground classes.

    Cross-entropy alone keeps the probabilities calibrated (what RankSEG-RMA assumes); the Dice
    term raises small-class recall under argmax but makes the network overconfident.
    """
    ce = F.cross_entropy(logits, target)
    if not with_dice:
        return ce
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()
    intersection = (probs * onehot).sum(dim=(0, 2, 3))
    denominator = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return ce + (1.0 - dice[1:]).mean()


def train(
    spec: ModelSpec,
    inputs: list[np.ndarray],
    labels: list[np.ndarray],
    iterations: int,
    focus_class: int | None,
    title: str,
    with_dice: bool = True,
) -> torch.nn.Module:
    """Train a fresh network of ``spec`` on crops of ``inputs``/``labels`` (seeded)."""
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    module = UNet(spec.in_channels, spec.num_classes, **spec.arguments)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=iterations, pct_start=0.1
    )
    start = time.perf_counter()
    module.train()
    for iteration in range(1, iterations + 1):
        x, y = sample_batch(inputs, labels, rng, focus_class)
        loss = loss_fn(module(x), y, with_dice)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if iteration % 50 == 0 or iteration == iterations:
            elapsed = time.perf_counter() - start
            print(
                f"{title} iteration {iteration}/{iterations}: "
                f"loss {loss.item():.4f} ({elapsed:.0f} s)"
            )
    return module.eval()


def write_metrics(
    model_dir: Path, spec: ModelSpec, scores: list[float], record: dict, title: str
) -> None:
    """Write ``metrics.json`` and print the held-out Dice per class."""
    metrics = {
        **record,
        "decision": "argmax",
        "dice": {name: round(s, 4) for name, s in zip(spec.class_names, scores, strict=True)},
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"{title}: held-out (seed {record['held_out_seed']}) argmax Dice per class:")
    for name, score in metrics["dice"].items():
        print(f"  {name:<12} {score:.4f}")


def make_ct_demo(out: Path, iterations: int, threads: int, loss: str) -> None:
    """Train the CT model and write image, label, model and metrics under ``out``."""
    start = time.perf_counter()
    template = LoadedModel(module=UNet(1, SPEC.num_classes, **SPEC.arguments), spec=SPEC)
    inputs, labels = [], []
    for seed in TRAIN_SEEDS:
        image, label = make_phantom(seed)
        inputs.append(model_input(template, image))
        labels.append(label)
    print(f"{len(TRAIN_SEEDS)} training phantoms ready in {time.perf_counter() - start:.1f} s")
    module = train(
        SPEC, inputs, labels, iterations, focus_class=3, title="CT", with_dice=loss == "ce+dice"
    )

    out.mkdir(parents=True, exist_ok=True)
    image, label = make_phantom(HELD_OUT_SEED)
    write_nifti(image.array, image.affine, out / "image.nii.gz")
    write_nifti(label, image.affine, out / "label.nii.gz")
    # save_model replaces only a model's own files: the old record goes first, a new one follows.
    (out / "model" / "metrics.json").unlink(missing_ok=True)
    model_dir = save_model(module, SPEC, out / "model", overwrite=True)

    # Score the files as written (NIfTI round trip), the way the test and the GUI read them.
    nii = nib.load(str(out / "image.nii.gz"))
    reread = Image(array=np.asarray(nii.dataobj), affine=nii.affine, modality="CT")
    truth = np.asarray(nib.load(str(out / "label.nii.gz")).dataobj)
    probs = predict(LoadedModel(module=module, spec=SPEC), reread, device="cpu")
    scores = dice_per_class(probs.argmax(axis=0), truth, SPEC.num_classes)
    record = training_record(module, TRAIN_SEEDS, iterations, threads, start)
    record["loss"] = loss
    write_metrics(model_dir, SPEC, scores, record, "CT demo")


def training_record(
    module: torch.nn.Module, seeds: tuple[int, ...], iterations: int, threads: int, start: float
) -> dict:
    """How a demo model was trained, for its metrics.json."""
    return {
        "held_out_seed": HELD_OUT_SEED,
        "train_seeds": list(seeds),
        "iterations": iterations,
        "batch_size": BATCH,
        "crop": CROP,
        "threads": threads,
        "seconds": round(time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in module.parameters()),
    }


def make_natural_demo(out: Path, iterations: int, threads: int) -> None:
    """Train the RGB model and write image, label, model and metrics under ``out``."""
    from skimage.io import imread, imsave

    start = time.perf_counter()
    template = LoadedModel(
        module=UNet(3, NATURAL_SPEC.num_classes, **NATURAL_SPEC.arguments), spec=NATURAL_SPEC
    )
    inputs, labels = [], []
    for seed in NATURAL_TRAIN_SEEDS:
        image, label = make_texture_scene(seed)
        inputs.append(model_input(template, image))
        labels.append(label)
    print(
        f"{len(NATURAL_TRAIN_SEEDS)} training scenes ready in {time.perf_counter() - start:.1f} s"
    )
    module = train(NATURAL_SPEC, inputs, labels, iterations, focus_class=None, title="RGB")

    out.mkdir(parents=True, exist_ok=True)
    image, label = make_texture_scene(HELD_OUT_SEED)
    imsave(out / "image.png", image.array[:, :, 0], check_contrast=False)
    imsave(out / "label.png", label[:, :, 0], check_contrast=False)
    (out / "model" / "metrics.json").unlink(missing_ok=True)
    model_dir = save_model(module, NATURAL_SPEC, out / "model", overwrite=True)

    pixels = imread(out / "image.png")
    reread = Image(array=pixels[:, :, None, :], affine=np.eye(4), is_natural=True)
    truth = imread(out / "label.png")[:, :, None]
    probs = predict(LoadedModel(module=module, spec=NATURAL_SPEC), reread, device="cpu")
    scores = dice_per_class(probs.argmax(axis=0), truth, NATURAL_SPEC.num_classes)
    record = training_record(module, NATURAL_TRAIN_SEEDS, iterations, threads, start)
    write_metrics(model_dir, NATURAL_SPEC, scores, record, "natural-image demo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=("both", "ct", "natural"), default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "resources" / "demo")
    parser.add_argument("--iterations", type=int, default=800, help="CT training steps")
    parser.add_argument("--natural-iterations", type=int, default=500, help="RGB training steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ct-loss",
        choices=("ce", "ce+dice"),
        default="ce",
        help="CT training loss; plain cross-entropy keeps the probabilities calibrated",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.which in ("both", "ct"):
        make_ct_demo(args.out, args.iterations, args.threads, args.ct_loss)
    if args.which in ("both", "natural"):
        make_natural_demo(args.out / "natural", args.natural_iterations, args.threads)
    print(f"done in {time.perf_counter() - start:.0f} s with {args.threads} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
