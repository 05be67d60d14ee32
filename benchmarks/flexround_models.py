"""The networks and data of the FlexRound benchmark: the demo U-Net and a dilated residual FCN.

Each network comes as a :class:`Network`: the model, its test volume with labels (only ever used
for the reported Dice), calibration patches drawn from one training phantom, and a separate
calibration split (slices of another training phantom, used without labels) on which learning
rates are chosen. The second network is deliberately not a U-Net: no down- or upsampling, three
residual blocks of dilated convolutions, trained briefly on phantoms when the benchmark starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.io import Image, read_image
from core.metrics import dice_score
from core.models import LoadedModel, ModelSpec, UNet, calibration_inputs, load_model, model_input
from core.phantom import make_phantom

__all__ = ["Network", "DilatedResidualFCN", "demo_network", "fcn_network", "NETWORKS"]

ROOT = Path(__file__).resolve().parents[1]
_CLASSES = ("background", "liver", "kidney", "lesion")
_COLORS = ((0, 0, 0), (220, 120, 60), (70, 160, 230), (250, 230, 40))
_PHANTOM_SHAPE = (160, 160, 48)


@dataclass
class Network:
    """A model with its test volume, calibration data and label-free calibration split.

    Attributes
    ----------
    name, source : str
        Short key and a sentence saying where the model came from.
    model : LoadedModel
    test_inputs : torch.Tensor
        Preprocessed, padded test slices ``(K, C, H, W)``.
    test_label : np.ndarray
        Label map ``(I, J, K)`` of the test volume.
    split_inputs : torch.Tensor
        Slices of a training phantom (not the calibration one), for choosing learning rates.
    calibration_image : Image
        The phantom calibration patches are drawn from (phantom 1).
    more_calibration : list of Image
        Further training phantoms (3, 4, ...) that :meth:`calibration` can add, so the
        patches come from several volumes.
    """

    name: str
    source: str
    model: LoadedModel
    test_inputs: torch.Tensor
    test_label: np.ndarray
    split_inputs: torch.Tensor
    calibration_image: Image
    more_calibration: list[Image]

    def calibration(self, n: int, crop: int, seed: int, volumes: int = 1) -> torch.Tensor:
        """``n`` random ``crop`` x ``crop`` patches of calibration slices (seeded), drawn from
        ``volumes`` training phantoms (1: phantom 1 alone; 2: phantoms 1 and 3; ...)."""
        images = [self.calibration_image, *self.more_calibration[: volumes - 1]]
        return calibration_inputs(self.model, images, n=n, seed=seed, crop=crop)

    @torch.no_grad()
    def predict(self, module: nn.Module, inputs: torch.Tensor) -> np.ndarray:
        """Argmax labels ``(I, J, K)`` of ``inputs``, cropped back to the label's size."""
        i, j = self.test_label.shape[:2]
        parts = [module(inputs[s : s + 16]).argmax(dim=1) for s in range(0, len(inputs), 16)]
        return torch.cat(parts)[:, :i, :j].permute(1, 2, 0).numpy()

    def test_dice(self, module: nn.Module) -> float:
        """Mean foreground Dice of ``module`` on the labelled test volume."""
        return _mean_foreground_dice(self.predict(module, self.test_inputs), self.test_label)

    def split_agreement(self, module: nn.Module, reference: np.ndarray) -> float:
        """Mean foreground Dice of ``module`` against the float model's labels on the split."""
        return _mean_foreground_dice(self.predict(module, self.split_inputs), reference)


def _mean_foreground_dice(prediction: np.ndarray, label: np.ndarray) -> float:
    scores = dice_score(prediction[None], label[None], num_classes=len(_CLASSES))
    return float(np.mean(scores[0, 1:]))


def _slices(model: LoadedModel, image: Image) -> torch.Tensor:
    """All slices of ``image`` along k, preprocessed and padded to the size divisor."""
    inputs = torch.from_numpy(model_input(model, image)).permute(3, 0, 1, 2).contiguous()
    divisor = max(model.spec.size_divisor, int(getattr(model.module, "size_divisor", 1)))
    pad = [(-s) % divisor for s in inputs.shape[-2:]]
    return F.pad(inputs, (0, pad[1], 0, pad[0]), mode="replicate")


def _spec(architecture: str, arguments: dict, name: str, divisor: int) -> ModelSpec:
    return ModelSpec(
        architecture=architecture,
        arguments=arguments,
        in_channels=1,
        class_names=_CLASSES,
        class_colors=_COLORS,
        activation="softmax",
        preprocessing=({"name": "ct_window", "center": 40.0, "width": 400.0},),
        mode="2d",
        patch_size=None,
        size_divisor=divisor,
        name=name,
    )


def _train(model: LoadedModel, steps: int, crop: int = 64) -> None:
    """Fit ``model`` on random crops of three training phantoms (seeds 1-3), Adam 3e-3."""
    volumes = [make_phantom(seed, shape=_PHANTOM_SHAPE) for seed in (1, 2, 3)]
    x = torch.cat([_slices(model, image) for image, _ in volumes])
    y = torch.cat(
        [torch.from_numpy(label.astype(np.int64)).permute(2, 0, 1) for _, label in volumes]
    )
    module = model.module
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    module.train()
    h, w = y.shape[-2:]
    for _ in range(steps):
        index = torch.randint(0, x.shape[0], (16,), generator=generator)
        i0 = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
        j0 = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        logits = module(x[index, :, i0 : i0 + crop, j0 : j0 + crop])
        loss = F.cross_entropy(logits, y[index, i0 : i0 + crop, j0 : j0 + crop])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()


def _network(name: str, source: str, model: LoadedModel, test: tuple[Image, np.ndarray]):
    image, label = test
    return Network(
        name=name,
        source=source,
        model=model,
        test_inputs=_slices(model, image),
        test_label=np.asarray(label).astype(np.int64),
        split_inputs=_slices(model, make_phantom(2, shape=_PHANTOM_SHAPE)[0]),
        calibration_image=make_phantom(1, shape=_PHANTOM_SHAPE)[0],
        # Phantom 2 is the label-free split; the FCN trained on 1-3, so 4 and 5 are unseen.
        more_calibration=[make_phantom(seed, shape=_PHANTOM_SHAPE)[0] for seed in (3, 4, 5)],
    )


def demo_network() -> Network:
    """The shipped demo U-Net and its held-out volume (a small stand-in is trained if missing)."""
    demo = ROOT / "resources" / "demo"
    try:
        model = load_model(demo / "model")
        test = (read_image(demo / "image.nii.gz"), read_image(demo / "label.nii.gz").array)
        return _network("demo", "demo U-Net resources/demo/model", model, test)
    except (ValueError, OSError, FileNotFoundError) as error:
        print(f"NOTE: demo not usable ({error}); training a small stand-in U-Net on phantoms")
    arguments = {"dims": 2, "base_channels": 8, "depth": 2, "norm": "batch"}
    torch.manual_seed(0)
    model = LoadedModel(
        module=UNet(1, 4, **arguments), spec=_spec("unet", arguments, "bench-stand-in", 4)
    )
    _train(model, steps=300)
    return _network("demo", "stand-in U-Net (demo missing)", model, make_phantom(1000))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        conv = {"kernel_size": 3, "padding": dilation, "dilation": dilation, "bias": False}
        self.conv1 = nn.Conv2d(channels, channels, **conv)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, **conv)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class DilatedResidualFCN(nn.Module):
    """Full-resolution segmentation net: a stem, residual blocks with dilations 1, 2, 4, 8, a
    1x1 head (10 convolutions, no pooling or upsampling, so nothing like the U-Net)."""

    def __init__(self, in_channels: int = 1, classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*(_ResidualBlock(width, d) for d in (1, 2, 4, 8)))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def fcn_network() -> Network:
    """The dilated residual FCN, trained for 2500 steps on phantoms 1-3 (seeded, ~2-4 min CPU;
    400 steps left it at 46 % test Dice on the regenerated phantoms, 2500 reach 81 %)."""
    torch.manual_seed(0)
    model = LoadedModel(
        module=DilatedResidualFCN(),
        spec=_spec("pickled-module", {}, "bench-dilated-fcn", 1),
    )
    _train(model, steps=2500)
    return _network(
        "fcn", "dilated residual FCN trained here on phantoms 1-3", model, make_phantom(1000)
    )


#: Benchmark networks by key.
NETWORKS: dict[str, Callable[[], Network]] = {"demo": demo_network, "fcn": fcn_network}
