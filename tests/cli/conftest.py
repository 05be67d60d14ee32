"""Small generated inputs for the headless commands, and a runner for `python main.py ...`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from core.models import ModelSpec, UNet, save_model
from core.phantom import PHANTOM_CLASSES, make_phantom

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 16)  # the smallest phantom make_phantom draws (16 voxels per axis at least)
SPACING = (1.5, 1.25, 3.0)

TINY_SPEC = ModelSpec(
    architecture="unet",
    arguments={"dims": 2, "base_channels": 4, "depth": 2, "norm": "batch", "residual": False},
    in_channels=1,
    class_names=PHANTOM_CLASSES,
    activation="softmax",
    preprocessing=({"name": "ct_window", "center": 40.0, "width": 400.0},),
    mode="2d",
    size_divisor=4,
    name="tiny-unet",
)


def run_cli(*args: str | os.PathLike[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python main.py ARGS`` from the repository root, capturing text output."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(
        [sys.executable, "main.py", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tiny_unet(seed: int = 0) -> UNet:
    """A randomly initialised 2-D U-Net with BatchNorm statistics that are not the identity."""
    torch.manual_seed(seed)
    module = UNet(1, len(PHANTOM_CLASSES), dims=2, base_channels=4, depth=2, norm="batch")
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.1, 0.1)
            layer.running_var.uniform_(0.5, 1.5)
    return module.eval()


@dataclass(frozen=True)
class CliData:
    """Paths of the generated inputs."""

    image: Path  # images/case01.nii.gz
    label: Path  # labels/case01_seg.nii.gz
    image2: Path  # images/case02.nii.gz
    label2: Path  # labels/case02.nii.gz
    images: Path  # folder with both images
    labels: Path  # folder with both labels
    model: Path  # tiny U-Net model folder


@pytest.fixture(scope="session")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> CliData:
    root = tmp_path_factory.mktemp("cli")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    paths = []
    for seed, label_name in ((1, "case01_seg.nii.gz"), (2, "case02.nii.gz")):
        image, label = make_phantom(seed, shape=SHAPE, spacing=SPACING)
        image_path = images / f"case0{seed}.nii.gz"
        label_path = labels / label_name
        nib.Nifti1Image(image.array, image.affine).to_filename(image_path)
        nib.Nifti1Image(label, image.affine).to_filename(label_path)
        paths += [image_path, label_path]
    model = save_model(tiny_unet(), TINY_SPEC, root / "model")
    return CliData(paths[0], paths[1], paths[2], paths[3], images, labels, model)


def file_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def numpy_dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    """Dice of one label by counting voxels (1.0 when the label is absent from both)."""
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def run_cli_on_terminal(*args: str | os.PathLike[str], timeout: float = 240) -> tuple[int, str]:
    """Run ``python main.py ARGS`` with stderr on a pseudo-terminal; return (exit code, stderr).

    A reader thread drains the terminal while the command runs, so a chatty command can never
    block on a full terminal buffer.
    """
    import pty
    import threading

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    try:
        result = subprocess.run(
            [sys.executable, "main.py", *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=slave,
            timeout=timeout,
            env=env,
        )
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return result.returncode, b"".join(chunks).decode("utf-8", "replace")
