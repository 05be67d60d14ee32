"""Tiny MONAI bundles made with MONAI's own classes (no download), and MONAI's own run of them.

The bundle is laid out as MONAI's model zoo lays them out: ``configs/metadata.json``,
``configs/inference.json`` with the zoo's usual ids (``imports``, ``bundle_root``, ``device``,
``datalist``, ``network_def``, ``network``, ``preprocessing``, ``dataset``, ``dataloader``,
``inferer``, ``postprocessing``) and ``models/model.pt``, the state dict of a randomly initialised
``monai.networks.nets.UNet``. Several ids hold ``$`` expressions as zoo bundles do (``device``,
``datalist``, ``output_dir``, ``network``); none of them is among what segbench instantiates.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "NETWORK_DEF",
    "NETWORK_DEF_2D",
    "SPACING",
    "bundle_config",
    "bundle_config_2d",
    "make_bundle",
    "monai_reference",
]

#: The bundle's Spacingd target (mm); test images use other spacings and orientations.
SPACING = (1.5, 1.5, 2.0)
NETWORK_DEF = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 1,
    "norm": "batch",
}


def bundle_config(activation: str = "softmax") -> dict[str, Any]:
    """``configs/inference.json`` of the test bundle (softmax or sigmoid outputs)."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": copy.deepcopy(NETWORK_DEF),
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {
                    "_target_": "Spacingd",
                    "keys": "image",
                    "pixdim": list(SPACING),
                    "mode": "bilinear",
                },
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -57,
                    "a_max": 164,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image", "device": "@device"},
            ],
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [16, 16, 16],
            "sw_batch_size": 2,
            "overlap": 0.25,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", activation: True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "meta_key_postfix": "meta_dict",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred"}
                | ({"argmax": True} if activation == "softmax" else {"threshold": 0.5}),
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "resample": False,
                    "squeeze_end_dims": True,
                },
            ],
        },
    }


NETWORK_DEF_2D = {
    "_target_": "UNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 1,
    "norm": "batch",
}


def bundle_config_2d() -> dict[str, Any]:
    """A 2-D bundle: the same ids, a 2-D UNet, Resized to a fixed size, 16x16 windows."""
    config = bundle_config()
    config["network_def"] = copy.deepcopy(NETWORK_DEF_2D)
    config["preprocessing"]["transforms"] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
        {"_target_": "Resized", "keys": "image", "spatial_size": [24, 20], "mode": "bilinear"},
        {"_target_": "EnsureTyped", "keys": "image", "device": "@device"},
    ]
    config["inferer"]["roi_size"] = [16, 16]
    return config


def make_bundle(
    folder: Path,
    *,
    activation: str = "softmax",
    channel_def: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    network_def: dict[str, Any] = NETWORK_DEF,
    seed: int = 0,
) -> Path:
    """Write a bundle folder with a random network's state dict; return the folder.

    The weights are those of ``network_def``, a ``monai.networks.nets`` class and its arguments
    (the config's own may be hostile on purpose).
    """
    from monai.networks import nets

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    config = config if config is not None else bundle_config(activation)
    torch.manual_seed(seed)
    network_class = getattr(nets, network_def["_target_"])
    network = network_class(**{k: v for k, v in network_def.items() if k != "_target_"})
    torch.save(network.state_dict(), folder / "models" / "model.pt")
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    if channel_def is None:
        channel_def = {"0": "background", "1": "organ", "2": "lesion"}
    outputs: dict[str, Any] = {"num_channels": 3, "spatial_shape": [16, 16, 16]}
    if channel_def:
        outputs["channel_def"] = channel_def
    metadata = {
        "name": "tiny_unet_segmentation",
        "version": "0.1.0",
        "monai_version": "1.6.1",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [16] * 3}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", **outputs}},
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return folder


def monai_reference(folder: Path, files: Sequence[Path], *, discretise: bool) -> np.ndarray:
    """The bundle's own inference config, run by MONAI on ``files``: probabilities or masks.

    MONAI's ``SupervisedEvaluator`` needs pytorch-ignite, which is not installed, so its
    iteration is written out here with the bundle's parsed objects: its ``dataloader`` (MONAI's
    Dataset/DataLoader with the bundle's ``preprocessing``, LoadImaged reading the file), its
    ``network`` with ``model.pt`` loaded as CheckpointLoader does, its ``inferer`` and its
    ``postprocessing`` (SaveImaged disabled; AsDiscreted too when ``discretise`` is False).
    Returns ``(C, I, J, K)`` probabilities or the ``(I, J, K)`` mask, in the order MONAI's
    reader gives the voxels; several files (2-D planes) are stacked along a new last axis.
    """
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch

    parser = ConfigParser()
    parser.read_config(str(folder / "configs" / "inference.json"))
    parser["bundle_root"] = str(folder)
    parser["datalist"] = [str(f) for f in files]
    parser["postprocessing::transforms::3::_disabled_"] = True  # SaveImaged
    if not discretise:
        parser["postprocessing::transforms::2::_disabled_"] = True  # AsDiscreted
    with warnings.catch_warnings():  # MONAI's notices about its own defaults
        warnings.simplefilter("ignore")
        network = parser.get_parsed_content("network")
        loader = parser.get_parsed_content("dataloader")
        inferer = parser.get_parsed_content("inferer")
        postprocessing = parser.get_parsed_content("postprocessing")
    network.load_state_dict(torch.load(folder / "models" / "model.pt", weights_only=True))
    network.eval()
    outputs = []
    for batch in loader:
        with torch.no_grad():
            pred = inferer(batch["image"], network)
        item = dict(decollate_batch(batch)[0])
        item["pred"] = decollate_batch(pred)[0]
        out = postprocessing(item)["pred"].detach().cpu().numpy()
        outputs.append(out[0].astype(np.int64) if discretise else out.astype(np.float32))
    return outputs[0] if len(outputs) == 1 else np.stack(outputs, axis=-1)
