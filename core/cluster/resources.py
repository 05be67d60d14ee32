"""What one task asks Ray for: CPU threads, a GPU when the model runs on CUDA, and memory.

Ray places a task on a node only where its requested resources are free, so asking for the
threads torch will use keeps N tasks on a node from fighting over its cores, and asking for the
memory a case needs keeps a node from taking more large volumes at once than it can hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TaskResources",
    "case_memory_bytes",
    "check_fits_cluster",
    "image_voxels",
    "wants_gpu",
]

#: A worker process with torch imported and a model loaded, before any image: what every task
#: holds whatever the case's size.
BASE_TASK_BYTES = 512 * 2**20

# Copies of the (C, I, J, K) float32 probabilities alive at the peak of a case: the network's
# output, the decision's working copy, and the expected-Dice term of the scoring.
_PROB_COPIES = 3


@dataclass(frozen=True)
class TaskResources:
    """Ray resource request of one task."""

    num_cpus: int
    num_gpus: float
    memory: int

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments of ``RemoteFunction.options``."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory}


def image_voxels(path: str | os.PathLike[str]) -> int:
    """Voxels of an image from its header alone (a DICOM folder: its bytes over two).

    Parameters
    ----------
    path : path-like
        Image file or DICOM folder.

    Returns
    -------
    int
        Voxel count times channels; for a file no reader understands, its size in bytes (a
        compressed file holds at least a byte per voxel rarely, so this errs small only for
        heavily compressed images, which the base allowance covers).
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():  # a DICOM series: 16-bit pixels, header bytes are noise
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) // 2
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return path.stat().st_size
    voxels = 1
    for size in reader.GetSize():
        voxels *= int(size)
    return voxels * int(reader.GetNumberOfComponents())


def _parameter_bytes(model: Any) -> int:
    module = getattr(model, "module", None)
    if module is None:
        return 0
    return sum(p.numel() * p.element_size() for p in module.parameters())


def case_memory_bytes(image_path: str | os.PathLike[str], models: Sequence[Any]) -> int:
    """Memory one case needs at its peak, estimated from the image's size and the models.

    The models run one after the other, so the peak is the largest model's: its weights, the
    image in float32, the label map and per-voxel masks, and :data:`_PROB_COPIES` copies of its
    float32 probabilities; plus :data:`BASE_TASK_BYTES` for the worker itself.

    Parameters
    ----------
    image_path : path-like
    models : sequence of core.models.LoadedModel

    Returns
    -------
    int
        Bytes.
    """
    voxels = image_voxels(image_path)
    per_model = [
        _parameter_bytes(m) + voxels * (4 + 8 + 2 + 4 * m.spec.num_classes * _PROB_COPIES)
        for m in models
    ]
    return BASE_TASK_BYTES + max(per_model, default=0)


def wants_gpu(device: str, cluster_gpus: float) -> bool:
    """Whether a task asks for a GPU: ``cuda`` always, ``auto`` when the cluster has one."""
    device = device.lower()
    if device.startswith("cuda"):
        return True
    return device == "auto" and cluster_gpus >= 1


def check_fits_cluster(
    resources: TaskResources, nodes: Sequence[dict[str, Any]], what: str
) -> None:
    """Refuse a request no live node can ever satisfy (Ray would wait for it forever).

    Parameters
    ----------
    resources : TaskResources
    nodes : sequence of dict
        ``ray.nodes()``.
    what : str
        The task's input, for the message.

    Raises
    ------
    ValueError
        Naming the input, what it needs and the largest node.
    """
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    for node in alive:
        if (
            node.get("CPU", 0) >= resources.num_cpus
            and node.get("GPU", 0) >= resources.num_gpus
            and node.get("memory", 0) >= resources.memory
        ):
            return
    largest = max(alive, key=lambda r: r.get("memory", 0), default={})
    raise ValueError(
        f"{what}: a task needs {resources.num_cpus} CPU, {resources.num_gpus:g} GPU and "
        f"{resources.memory / 2**30:.2f} GiB, more than any node of the cluster offers (largest: "
        f"{largest.get('CPU', 0):g} CPU, {largest.get('GPU', 0):g} GPU, "
        f"{largest.get('memory', 0) / 2**30:.2f} GiB)"
    )
