"""What a Ray task asks for: voxels from headers, memory per case, GPU, a node that fits."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import skimage.io

from core.cluster.resources import (
    BASE_TASK_BYTES,
    TaskResources,
    case_memory_bytes,
    check_fits_cluster,
    image_voxels,
    wants_gpu,
)
from core.models import load_model


def test_image_voxels_come_from_the_header_as_the_readers_see_them(eval_data, tmp_path):
    image = eval_data.cases[0].image
    assert image_voxels(image) == int(np.prod(nib.load(image).shape))
    rgb = np.zeros((20, 30, 3), np.uint8)
    skimage.io.imsave(tmp_path / "photo.png", rgb, check_contrast=False)
    assert image_voxels(tmp_path / "photo.png") == 20 * 30 * 3


def test_case_memory_counts_the_largest_model_once_and_grows_with_the_volume(eval_data):
    model = load_model(eval_data.models[0])
    image = eval_data.cases[0].image
    voxels = int(np.prod(nib.load(image).shape))
    weights = sum(p.numel() * 4 for p in model.module.parameters())
    classes = model.spec.num_classes
    # Input and label map, masks, and three float32 copies of the probabilities.
    expected = BASE_TASK_BYTES + weights + voxels * (4 + 8 + 2 + 12 * classes)
    assert case_memory_bytes(image, [model]) == expected
    assert case_memory_bytes(image, [model, model]) == expected  # models run one at a time


@pytest.mark.parametrize(
    ("device", "cluster_gpus", "expected"),
    [("cuda", 0, True), ("cuda:1", 2, True), ("auto", 4, True), ("auto", 0, False),
     ("cpu", 8, False)],
)  # fmt: skip
def test_a_task_asks_for_a_gpu_when_its_model_runs_on_cuda(device, cluster_gpus, expected):
    assert wants_gpu(device, cluster_gpus) is expected


def test_a_case_no_node_can_hold_is_refused_with_its_name_and_sizes():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0, "memory": 8 * 2**30}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0, "memory": 512 * 2**30}},
    ]
    check_fits_cluster(TaskResources(2, 0, 6 * 2**30), nodes, "a.nii.gz")
    with pytest.raises(ValueError, match=r"big\.nii\.gz: .*12\.00 GiB.*largest: 4 CPU, 0 GPU"):
        check_fits_cluster(TaskResources(1, 0, 12 * 2**30), nodes, "big.nii.gz")
    with pytest.raises(ValueError, match="1 GPU"):
        check_fits_cluster(TaskResources(1, 1, 2**30), nodes, "gpu.nii.gz")
