"""Labelled cases and a tiny model for the evaluation tests, and a Ray test cluster of two nodes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import pytest

from core.cli.matching import expand_files, pair_cases
from core.models import save_model
from core.phantom import make_phantom
from tests.cli.conftest import SHAPE, SPACING, TINY_SPEC, tiny_unet

# Small Ray nodes: this machine is shared, and a case's rows are a few kilobytes.
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@dataclass(frozen=True)
class EvalData:
    images: Path
    labels: Path
    models: list[Path]
    cases: list  # core.cli.matching.Case, in report order


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> EvalData:
    """Six phantom cases and two tiny U-Nets (different weights)."""
    root = tmp_path_factory.mktemp("evaluation")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for seed in range(1, 7):
        image, label = make_phantom(seed, shape=SHAPE, spacing=SPACING)
        nib.Nifti1Image(image.array, image.affine).to_filename(images / f"case{seed:02d}.nii.gz")
        nib.Nifti1Image(label, image.affine).to_filename(labels / f"case{seed:02d}_seg.nii.gz")
    models = [
        save_model(tiny_unet(seed), replace(TINY_SPEC, name=f"tiny{seed}"), root / f"model{seed}")
        for seed in (0, 1)
    ]
    cases = pair_cases(expand_files([images], "images"), expand_files([labels], "labels")).cases
    return EvalData(images, labels, models, cases)


@pytest.fixture(scope="package")
def ray_cluster():
    """A head without CPUs and two one-CPU worker nodes on this machine; the driver joined."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20},
    )
    nodes = [cluster.add_node(**NODE_ARGS) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
