"""Framework models for the tests, made once per session: nnU-Net folders by nnU-Net itself,
MONAI bundles with MONAI's own classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.frameworks.monai_bundles import make_bundle
from tests.frameworks.nnunet_models import make_nnunet_model


@pytest.fixture(scope="session")
def nnunet_3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3d_fullres, folds 0 and 1, one CT channel, labels background/organ/lesion."""
    return make_nnunet_model(tmp_path_factory.mktemp("nnunet3d"), configuration="3d_fullres")


@pytest.fixture(scope="session")
def nnunet_2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2d, fold 0 only."""
    return make_nnunet_model(
        tmp_path_factory.mktemp("nnunet2d"), configuration="2d", folds=(0,), dataset_id=502
    )


@pytest.fixture(scope="session")
def nnunet_regions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3d_fullres, region-based (whole = organ + lesion, core = lesion), two MR channels."""
    return make_nnunet_model(
        tmp_path_factory.mktemp("nnunetregions"),
        configuration="3d_fullres",
        folds=(0,),
        regions=True,
        channels=2,
        dataset_id=503,
    )


@pytest.fixture(scope="session")
def monai_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MONAI bundle: 3-D UNet, softmax over background/organ/lesion, Spacingd 1.5x1.5x2 mm."""
    return make_bundle(tmp_path_factory.mktemp("monai") / "tiny_unet_segmentation")


def raw_case(model_folder: Path, case: str = "case_000") -> list[Path]:
    """The channel files of a training case of the dataset the model was planned on."""
    dataset = model_folder.parent.name
    raw = model_folder.parents[2] / "nnUNet_raw" / dataset / "imagesTr"
    return sorted(raw.glob(f"{case}_*.nii.gz"))
