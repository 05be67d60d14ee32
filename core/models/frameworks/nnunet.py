"""nnU-Net v2 trained model folders, run by nnU-Net's own predictor.

A folder ``<Trainer>__<Plans>__<configuration>`` holds ``dataset.json``, ``plans.json`` and
``fold_K/checkpoint_final.pth`` (or ``checkpoint_best.pth``). Opening it reads the checkpoints
with torch's safe unpickler (:mod:`core.models.frameworks.checkpoints`), builds the network with
the trainer's own ``build_network_architecture`` and hands everything to
``nnUNetPredictor.manual_initialization``, the entry point nnU-Net offers for checkpoints loaded
by the caller. Inference is nnU-Net's code end to end: its preprocessing (transpose, crop to
non-zero, resampling to the plan's spacing, the plan's normalisation), its Gaussian sliding
window with mirroring, the fold ensemble, and its export back to the input grid. This module only
converts between segbench's voxel order and nnU-Net's, and reports progress.

Axis orders: nnU-Net works in SimpleITK's array order, ``(C, z, y, x)``, i.e. the file's voxel
axes reversed, with the spacing reversed likewise. A medical :class:`~core.io.image.Image` keeps
nibabel's ``(i, j, k)`` order, so its array is transposed ``(k, j, i)`` on the way in and back on
the way out. Natural 2-D images follow nnU-Net's ``NaturalImage2DIO``: ``(C, 1, rows, columns)``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.io.image import Image
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.models.frameworks.checkpoints import read_checkpoint
from core.models.frameworks.common import (
    background_for_multilabel,
    load_member_state,
    padded_shape,
    random_patches,
    read_json,
    stack_foreground_patches,
)
from core.models.trust import UntrustedCodeError

__all__ = [
    "CHECKPOINT_NAMES",
    "NNUNET_FRAMEWORK",
    "NnUNetModel",
    "is_nnunet_folder",
    "open_nnunet_deployed",
    "open_nnunet_folder",
]

NNUNET_FRAMEWORK = "nnU-Net v2"
#: Checkpoint files nnU-Net writes per fold, in the order they are looked for.
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
_SUPPORTED_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")
#: Where plans.json may point for the network and its building blocks without being code.
_SAFE_ARCHITECTURE_PREFIXES = ("dynamic_network_architectures.",)
_SAFE_IMPORT_PREFIXES = ("torch.nn.",)


def is_nnunet_folder(path: Path) -> bool:
    """True for a folder with ``plans.json``, ``dataset.json`` and at least one ``fold_*``."""
    return (
        path.is_dir()
        and (path / "plans.json").is_file()
        and (path / "dataset.json").is_file()
        and any(p.is_dir() and p.name.startswith("fold_") for p in path.iterdir())
    )


def _quietly() -> contextlib.AbstractContextManager[Any]:
    """Silence nnU-Net's progress prints (they would land in the middle of the app's output)."""
    return contextlib.redirect_stdout(io.StringIO())


def _available_folds(folder: Path, checkpoint: str) -> list[str]:
    folds = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name.startswith("fold_") and (entry / checkpoint).is_file():
            folds.append(entry.name[len("fold_") :])
    # nnUNetv2_predict ensembles the numbered folds; fold_all only when asked for.
    numbered = sorted((f for f in folds if f.isdigit()), key=int)
    return numbered or [f for f in folds if f == "all"]


def _check_plans_are_data(configuration: Any, plans_path: Path) -> None:
    """Refuse plans that name classes outside nnU-Net's network library and torch.nn.

    nnU-Net imports ``network_arch_class_name`` and every ``network_arch_init_kwargs_req_import``
    entry by name and calls them: a plans.json pointing elsewhere is code.
    """
    names = [configuration.network_arch_class_name]
    kwargs = configuration.network_arch_init_kwargs
    for key in configuration.network_arch_init_kwargs_req_import:
        names.append(str(kwargs.get(key)))
    for index, name in enumerate(names):
        prefixes = _SAFE_ARCHITECTURE_PREFIXES if index == 0 else _SAFE_IMPORT_PREFIXES
        if name and name != "None" and not name.startswith(prefixes):
            raise UntrustedCodeError(
                f"{plans_path}: the plans name {name!r}, outside dynamic_network_architectures "
                "and torch.nn; nnU-Net would import and run it, so it is code: pass trust=True "
                "only if you trust where the model came from"
            )


def image_to_nnunet(images: Sequence[Image]) -> tuple[np.ndarray, dict[str, Any]]:
    """Channel files of one case as nnU-Net's input array and properties.

    Parameters
    ----------
    images : sequence of Image
        One image per input channel (``case_0000``, ``case_0001``, ...), on one grid; an RGB
        image gives three channels.

    Returns
    -------
    array : numpy.ndarray
        float32 ``(C, z, y, x)`` in SimpleITK order (``(C, 1, rows, columns)`` for natural
        images).
    properties : dict
        ``{"spacing": [...]}`` in the same axis order, as ``predict_single_npy_array`` takes it.
    """
    channels: list[np.ndarray] = []
    first = images[0]
    for image in images:
        if image.shape3 != first.shape3:
            raise ValueError(
                f"{image.path}: channel grid {image.shape3} differs from {first.path}'s "
                f"{first.shape3}"
            )
        if image.is_natural:
            planes = image.array[:, :, 0]  # (rows, columns[, 3])
            planes = np.moveaxis(planes, -1, 0) if image.is_rgb else planes[np.newaxis]
            channels.extend(p[np.newaxis] for p in planes)  # (1, rows, columns) each
        else:
            if image.is_rgb:
                raise ValueError(f"{image.path}: an RGB volume cannot feed an nnU-Net model")
            channels.append(np.asarray(image.array).transpose(2, 1, 0))
    data = np.stack(channels).astype(np.float32, copy=False)
    if first.is_natural:
        spacing = [999.0, 1.0, 1.0]  # what NaturalImage2DIO reports
    else:
        # As SimpleITK reads it from the header: float32 (a float64 spacing from the affine
        # moves nnU-Net's resampling grid by a hair, about 3e-4 in the probabilities).
        spacing = [float(np.float32(s)) for s in reversed(first.spacing)]
    return data, {"spacing": spacing}


def probabilities_from_nnunet(probs: np.ndarray, natural: bool) -> np.ndarray:
    """nnU-Net's ``(C, z, y, x)`` probabilities back in the image's ``(C, I, J, K)`` order."""
    if natural:
        return probs.transpose(0, 2, 3, 1)  # (C, 1, rows, columns) -> (C, rows, columns, 1)
    return probs.transpose(0, 3, 2, 1)


#: The key of the "state dicts" handed to nnU-Net's predictor when runtimes replace the network.
_FOLD_KEY = "segbench_fold"


class _FoldRuntimes(nn.Module):
    """What nnU-Net's predictor runs when each fold has its own runtime (ONNX Runtime).

    The predictor loads a fold's parameters into its network before that fold's tiles; here
    the "parameters" only name the fold, and loading them switches the module that runs.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(networks)
        self.active = 0

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> None:
        # nnU-Net ignores what loading returns; there are no tensors to report on.
        self.active = int(state_dict[_FOLD_KEY])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.folds[self.active](x)


@dataclass
class NnUNetModel:
    """An nnU-Net v2 model: plans, dataset description, one weight set per fold.

    Attributes
    ----------
    folder : pathlib.Path
        The trained model folder.
    configuration : str
        ``"2d"``, ``"3d_fullres"`` or ``"3d_lowres"``.
    folds : list of str
        The folds whose weights form the ensemble (``"0"``, ``"1"``, ... or ``"all"``).
    checkpoint : str
        The checkpoint file name read in each fold folder.
    parameters : list of dict
        One state dict per fold, in ``folds`` order.
    network : torch.nn.Module
        The network (deep supervision off) holding the first fold's weights.
    use_mirroring : bool
        Test-time mirroring along the axes the trainer allowed (nnU-Net's default: on).
    tile_step_size : float
        Sliding-window step as a fraction of the patch (nnU-Net's default 0.5).
    runtime : tuple of torch.nn.Module
        One module per fold that the predictor runs instead of :attr:`network` with the fold's
        weights (ONNX Runtime sessions, :func:`core.deploy.onnx_runtime.with_backend`); empty
        for the torch backend.
    """

    folder: Path
    configuration: str
    folds: list[str]
    checkpoint: str
    plans: dict[str, Any]
    dataset_json: dict[str, Any]
    trainer_name: str
    mirror_axes: tuple[int, ...] | None
    parameters: list[dict[str, torch.Tensor]]
    network: nn.Module
    use_mirroring: bool = True
    tile_step_size: float = 0.5
    runtime: tuple[nn.Module, ...] = ()
    _managers: tuple[Any, Any] | None = field(default=None, repr=False)

    framework = NNUNET_FRAMEWORK

    # -- nnU-Net's own objects -------------------------------------------------------------
    @property
    def plans_manager(self) -> Any:
        return self._nnunet_managers()[0]

    @property
    def configuration_manager(self) -> Any:
        return self._nnunet_managers()[1]

    def _nnunet_managers(self) -> tuple[Any, Any]:
        if self._managers is None:
            from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

            plans_manager = PlansManager(self.plans)
            self._managers = (plans_manager, plans_manager.get_configuration(self.configuration))
        return self._managers

    @property
    def label_manager(self) -> Any:
        return self.plans_manager.get_label_manager(self.dataset_json)

    @property
    def has_regions(self) -> bool:
        """True for region-based training: sigmoid outputs over overlapping regions."""
        return bool(self.label_manager.has_regions)

    @property
    def input_channels(self) -> int:
        return len(self.dataset_json.get("channel_names") or self.dataset_json.get("modality"))

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.configuration_manager.patch_size)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.configuration_manager.spacing)

    def size_multiple(self) -> tuple[int, ...]:
        """Per axis, the product of the network's strides: input sizes must be multiples."""
        strides = self.configuration_manager.network_arch_init_kwargs.get("strides") or []
        multiple = [1] * len(self.patch_size)
        for stride in strides:
            stride = [stride] * len(multiple) if isinstance(stride, int) else stride
            multiple = [m * int(s) for m, s in zip(multiple, stride, strict=True)]
        return tuple(multiple)

    def class_names(self) -> list[str]:
        """Background first, then the labels (or regions) in output-channel order."""
        labels = self.dataset_json["labels"]
        if self.has_regions:
            names = ["background"]
            for name, value in labels.items():
                if name != "background" and value not in (0, [0]):
                    names.append(str(name))
            return names
        by_value = sorted(
            ((int(v), str(k)) for k, v in labels.items() if k != "ignore"), key=lambda x: x[0]
        )
        return [name for _, name in by_value]

    def describe(self) -> dict[str, Any]:
        """Framework facts for the model line and ``info``."""
        return {
            "framework": self.framework,
            "configuration": self.configuration,
            "trainer": self.trainer_name,
            "plans": self.plans.get("plans_name", ""),
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "input_channels": self.input_channels,
            "channel_names": list((self.dataset_json.get("channel_names") or {}).values()),
            "normalization": [str(n) for n in self.configuration_manager.normalization_schemes],
            "patch_size": list(self.patch_size),
            "spacing_mm": list(self.spacing),
            "region_based": self.has_regions,
            "mirroring": list(self.mirror_axes or ()) if self.use_mirroring else [],
            "tile_step_size": self.tile_step_size,
        }

    # -- members of the ensemble (what quantization works on) ------------------------------
    def member_names(self) -> list[str]:
        """``"fold 0"``, ``"fold 1"``, ... in ensemble order."""
        return [f"fold {fold}" for fold in self.folds]

    def members(self) -> list[nn.Module]:
        """One network per fold, each holding that fold's weights (copies of :attr:`network`)."""
        modules = []
        for state in self.parameters:
            module = copy.deepcopy(self.network)
            module.load_state_dict(state)
            modules.append(module.eval())
        return modules

    def with_members(self, modules: Sequence[nn.Module]) -> NnUNetModel:
        """The same model with the folds' weights taken from ``modules`` (e.g. quantized ones).

        BatchNorms that quantization folded away become identities, so every fold's weights
        keep the planned network's layout (which the predictor loads strictly).
        """
        if len(modules) != len(self.folds):
            raise ValueError(
                f"expected {len(self.folds)} networks (one per fold), got {len(modules)}"
            )
        parameters = []
        for module in modules:
            network = copy.deepcopy(self.network)
            state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            load_member_state(network, state, str(self.folder))
            parameters.append({k: v.clone() for k, v in network.state_dict().items()})
        network = copy.deepcopy(self.network)
        network.load_state_dict(parameters[0])
        return replace(self, parameters=parameters, network=network.eval())

    def with_runtime(self, networks: Sequence[nn.Module]) -> NnUNetModel:
        """The same model with each fold's forward pass run by ``networks`` (one per fold)."""
        if len(networks) != len(self.folds):
            raise ValueError(
                f"expected {len(self.folds)} networks (one per fold), got {len(networks)}"
            )
        return replace(self, runtime=tuple(networks))

    def layout_names(self, names: set[str]) -> set[str]:
        """``plans.json``, ``dataset.json`` and the ``fold_*`` folders among ``names``."""
        return {n for n in names if n in ("plans.json", "dataset.json") or n.startswith("fold_")}

    def member_folders(self, folder: Path) -> list[Path]:
        """Each fold's folder (``fold_K``) in a model folder ``folder`` of this layout."""
        return [folder / f"fold_{fold}" for fold in self.folds]

    def save_layout(self, folder: Path) -> None:
        """Write what the model is besides its weights: ``plans.json`` and ``dataset.json``."""
        (folder / "plans.json").write_text(json.dumps(self.plans, indent=2), encoding="utf-8")
        (folder / "dataset.json").write_text(
            json.dumps(self.dataset_json, indent=2), encoding="utf-8"
        )

    def deploy_facts(self) -> dict[str, Any]:
        """What a checkpoint tells the predictor besides the weights, for a deploy folder
        (whose folds are ONNX networks, without checkpoints)."""
        return {
            "configuration": self.configuration,
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "trainer_name": self.trainer_name,
            "mirror_axes": list(self.mirror_axes) if self.mirror_axes is not None else None,
        }

    def save_members(self, folder: Path) -> list[Path]:
        """Write the model as an nnU-Net trained model folder that ``nnUNetPredictor`` opens.

        Each fold's checkpoint holds what the predictor reads (weights, trainer name,
        configuration, mirroring axes) and nothing that needs the full unpickler.

        Returns
        -------
        list of pathlib.Path
            Each fold's folder, in :attr:`folds` order.
        """
        self.save_layout(folder)
        written = []
        for fold, state, fold_folder in zip(
            self.folds, self.parameters, self.member_folders(folder), strict=True
        ):
            fold_folder.mkdir(parents=True, exist_ok=True)
            checkpoint = {
                "network_weights": {k: v.detach().cpu().contiguous() for k, v in state.items()},
                "trainer_name": self.trainer_name,
                "init_args": {
                    "configuration": self.configuration,
                    "fold": int(fold) if fold.isdigit() else fold,
                },
                "inference_allowed_mirroring_axes": self.mirror_axes,
            }
            torch.save(checkpoint, fold_folder / self.checkpoint)
            written.append(fold_folder)
        return written

    # -- inference -----------------------------------------------------------------------
    def _predictor(self, device: torch.device) -> Any:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        with _quietly():
            predictor = nnUNetPredictor(
                tile_step_size=self.tile_step_size,
                use_gaussian=True,
                use_mirroring=self.use_mirroring,
                perform_everything_on_device=device.type == "cuda",
                device=device,
                verbose=False,
                verbose_preprocessing=False,
                allow_tqdm=False,
            )
            network, parameters = self.network, self.parameters
            if self.runtime:
                network = _FoldRuntimes(self.runtime)
                parameters = [{_FOLD_KEY: torch.tensor(i)} for i in range(len(self.runtime))]
            predictor.manual_initialization(
                network,
                self.plans_manager,
                self.configuration_manager,
                parameters,
                self.dataset_json,
                self.trainer_name,
                self.mirror_axes,
            )
        return predictor

    def preprocess(self, images: Sequence[Image]) -> tuple[np.ndarray, dict[str, Any]]:
        """nnU-Net's preprocessing of one case: the network's input space and the properties."""
        array, properties = image_to_nnunet(images)
        if array.shape[0] != self.input_channels:
            where = images[0].path
            raise ValueError(
                f"{where}: the case has {array.shape[0]} channel(s) but the nnU-Net model "
                f"{self.folder.name} expects {self.input_channels} "
                f"({', '.join(self.describe()['channel_names'])}); open its files "
                "case_0000, case_0001, ... together"
            )
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        with _quietly():
            data, _, properties = preprocessor.run_case_npy(
                array,
                None,
                properties,
                self.plans_manager,
                self.configuration_manager,
                self.dataset_json,
            )
        return data, properties

    def _tiles_per_fold(self, predictor: Any, shape: Sequence[int]) -> int:
        padded = padded_shape(shape, self.patch_size)
        tiles = len(predictor._internal_get_sliding_window_slicers(padded))
        mirrors = 1
        if self.use_mirroring and self.mirror_axes:
            mirrors = 2 ** len(self.mirror_axes)
        return tiles * mirrors

    def predict(
        self,
        images: Sequence[Image],
        *,
        device: str | torch.device = "auto",
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Class probabilities on the images' grid, ``(C, I, J, K)`` float32.

        Region-based models get a background channel in front: ``1 -`` the largest region
        probability, so channel ``c >= 1`` is region ``c - 1`` and argmax or a threshold rule
        finds the same voxels nnU-Net's ``regions_class_order`` painting does.
        """
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        target = resolve_device(device)
        report(on_progress, Progress(0, None, "nnU-Net preprocessing", stage="preprocessing"))
        data, properties = self.preprocess(images)
        if cancel is not None:
            cancel.raise_if_cancelled()
        predictor = self._predictor(target)
        per_fold = self._tiles_per_fold(predictor, data.shape[1:])
        total = per_fold * len(self.folds)
        counter = {"calls": 0}

        def before_tile(_module: nn.Module, _args: Any) -> None:
            # Runs before every forward pass of the predictor (each tile and mirror).
            if cancel is not None:
                cancel.raise_if_cancelled()
            fold = self.folds[min(counter["calls"] // per_fold, len(self.folds) - 1)]
            counter["calls"] += 1
            report(
                on_progress,
                Progress(
                    counter["calls"],
                    total,
                    f"nnU-Net fold {fold}: tile {1 + (counter['calls'] - 1) % per_fold}/{per_fold}",
                    stage="inference",
                ),
            )

        handle = predictor.network.register_forward_pre_hook(before_tile)
        try:
            with _quietly():
                logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data))
        finally:
            handle.remove()
            predictor.network.cpu()
        report(on_progress, Progress(0, None, "nnU-Net export to the image grid", stage="export"))
        with _quietly():
            # The logits go as the predictor gives them (float16 on the CPU), as in
            # predict_single_npy_array: converting them first changes the resampled result.
            _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits,
                self.plans_manager,
                self.configuration_manager,
                self.label_manager,
                properties,
                return_probabilities=True,
                num_threads_torch=torch.get_num_threads(),
            )
        probs = np.asarray(probs, dtype=np.float32)
        if self.has_regions:
            probs = background_for_multilabel(probs)
        return np.ascontiguousarray(probabilities_from_nnunet(probs, images[0].is_natural))

    def calibration_inputs(
        self, cases: Sequence[Sequence[Image]], *, n: int, seed: int, crop: int | None = None
    ) -> torch.Tensor:
        """Patches of nnU-Net-preprocessed cases: the network's own input space.

        3-D configurations take patches of the plan's patch size (or ``crop`` cubes), 2-D ones
        slices along nnU-Net's first axis cut to the plan's 2-D patch size (or ``crop``
        squares). Patches with more foreground are preferred, as for segbench's own models
        (:func:`core.models.calibration.choose_foreground_samples`).
        """
        rng = np.random.default_rng(seed)
        patch = tuple(self.patch_size)
        if crop is not None:
            # Rounded up to what the network's downsampling needs (nnU-Net plans its patch
            # sizes as multiples of the strides' product; a 48 crop breaks a 6-stage U-Net),
            # and at least two bottleneck voxels per axis: InstanceNorm cannot normalise one.
            patch = tuple(
                min(p, max(-(-min(crop, p) // m) * m, 2 * m))
                for p, m in zip(patch, self.size_multiple(), strict=True)
            )
        candidates: list[np.ndarray] = []
        for case in cases:
            data, _ = self.preprocess(case)
            if len(patch) == 2:  # 2-D network: the slices of the volume are its inputs
                volumes = [data[:, z] for z in range(data.shape[1])]
            else:
                volumes = [data]
            count = max(1, math.ceil(2 * n / max(1, len(volumes) * len(cases))))
            for volume in volumes:
                candidates.extend(random_patches(volume, patch, count, rng))
        return stack_foreground_patches(candidates, n, rng)


def _read_plans(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``plans.json`` and ``dataset.json`` of ``folder``, the latter checked for what inference
    needs."""
    plans = read_json(folder / "plans.json")
    dataset_json = read_json(folder / "dataset.json")
    if "labels" not in dataset_json or not (
        dataset_json.get("channel_names") or dataset_json.get("modality")
    ):
        raise ValueError(f"{folder / 'dataset.json'}: needs 'labels' and 'channel_names'")
    return plans, dataset_json


def _managers(
    folder: Path,
    plans: dict[str, Any],
    dataset_json: dict[str, Any],
    configuration: str,
    trust: bool,
) -> tuple[Any, Any, Any]:
    """nnU-Net's plans, configuration and label managers, after checking the configuration is
    one segbench runs and (unless trusted) that the plans name no code."""
    if configuration not in plans.get("configurations", {}):
        raise ValueError(f"{folder / 'plans.json'}: has no configuration {configuration!r}")
    if configuration not in _SUPPORTED_CONFIGURATIONS:
        raise ValueError(
            f"{folder}: configuration {configuration!r} is not supported (the cascade needs "
            "the low-resolution stage's segmentation); use one of "
            f"{', '.join(_SUPPORTED_CONFIGURATIONS)}"
        )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        label_manager = plans_manager.get_label_manager(dataset_json)
    except (KeyError, TypeError, AssertionError, ValueError) as error:
        raise ValueError(
            f"{folder}: plans.json or dataset.json is not nnU-Net's ({error})"
        ) from None
    if not trust:
        _check_plans_are_data(configuration_manager, folder / "plans.json")
    return plans_manager, configuration_manager, label_manager


def open_nnunet_deployed(
    folder: Path,
    facts: dict[str, Any],
    networks: Sequence[nn.Module],
    *,
    trust: bool = False,
) -> NnUNetModel:
    """An nnU-Net model whose folds are ONNX networks: a deploy folder written by
    :func:`core.deploy.framework_package.export_framework_onnx`.

    nnU-Net's predictor runs as for a trained model folder (preprocessing, sliding window,
    mirroring, fold ensemble, export), with each fold's forward pass in ``networks``.

    Parameters
    ----------
    folder : pathlib.Path
        ``plans.json``, ``dataset.json`` and ``fold_K/`` with each fold's network.
    facts : dict
        :meth:`NnUNetModel.deploy_facts` of the exported model, for the folds in ``networks``.
    networks : sequence of torch.nn.Module
        One runtime per fold, in ``facts["folds"]`` order.
    trust : bool
        Allow plans naming classes outside dynamic_network_architectures / torch.nn.
    """
    plans, dataset_json = _read_plans(folder)
    configuration = str(facts.get("configuration", ""))
    managers = _managers(folder, plans, dataset_json, configuration, trust)
    folds = [str(fold) for fold in facts.get("folds") or []]
    if len(folds) != len(networks) or not folds:
        raise ValueError(f"{folder}: expected one network per fold, got {len(networks)}")
    axes = facts.get("mirror_axes")
    runtimes = tuple(networks)
    return NnUNetModel(
        folder=folder,
        configuration=configuration,
        folds=folds,
        checkpoint=str(facts.get("checkpoint") or CHECKPOINT_NAMES[0]),
        plans=plans,
        dataset_json=dataset_json,
        trainer_name=str(facts.get("trainer_name") or "nnUNetTrainer"),
        mirror_axes=tuple(int(a) for a in axes) if axes is not None else None,
        parameters=[],
        # The planned architecture is not rebuilt: nothing here trains or quantizes it.
        network=runtimes[0],
        runtime=runtimes,
        _managers=managers[:2],
    )


def open_nnunet_folder(
    folder: Path,
    *,
    trust: bool = False,
    folds: Sequence[str | int] | None = None,
    checkpoint: str | None = None,
) -> NnUNetModel:
    """Open an nnU-Net v2 trained model folder without running code it carries.

    Parameters
    ----------
    folder : pathlib.Path
        ``<Trainer>__<Plans>__<configuration>`` with ``plans.json``, ``dataset.json`` and
        ``fold_K/``.
    trust : bool
        Allow checkpoints that need the full unpickler and plans naming classes outside
        dynamic_network_architectures / torch.nn.
    folds : sequence of str or int, optional
        The folds to ensemble; every numbered fold with the checkpoint when omitted, as
        ``nnUNetv2_predict`` does.
    checkpoint : str, optional
        ``checkpoint_final.pth`` (default) or ``checkpoint_best.pth``; the first one present
        when omitted.

    Raises
    ------
    ValueError
        Missing or unreadable files, an unsupported configuration, a fold without the
        checkpoint, weights that do not fit the planned network; all naming the file.
    UntrustedCodeError
        Code would run and ``trust`` is False.
    """
    plans, dataset_json = _read_plans(folder)
    if checkpoint is None:
        checkpoint = next(
            (name for name in CHECKPOINT_NAMES if _available_folds(folder, name)),
            CHECKPOINT_NAMES[0],
        )
    available = _available_folds(folder, checkpoint)
    if folds is None:
        chosen = available
    else:
        chosen = [str(f) for f in folds]
        missing = [f for f in chosen if not (folder / f"fold_{f}" / checkpoint).is_file()]
        if missing:
            raise ValueError(
                f"{folder}: no {checkpoint} for fold(s) {', '.join(missing)} "
                f"(available: {', '.join(available) or 'none'})"
            )
    if not chosen:
        raise ValueError(f"{folder}: no fold_K/{checkpoint} found")

    parameters = []
    trainer_name = configuration = ""
    mirror_axes: tuple[int, ...] | None = None
    for index, fold in enumerate(chosen):
        path = folder / f"fold_{fold}" / checkpoint
        state = read_checkpoint(path, trust=trust)
        if not isinstance(state, dict) or "network_weights" not in state:
            raise ValueError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
        if index == 0:
            trainer_name = str(state.get("trainer_name", "nnUNetTrainer"))
            init_args = state.get("init_args") or {}
            configuration = str(init_args.get("configuration", folder.name.split("__")[-1]))
            axes = state.get("inference_allowed_mirroring_axes")
            mirror_axes = tuple(int(a) for a in axes) if axes is not None else None
        parameters.append(state["network_weights"])

    plans_manager, configuration_manager, label_manager = _managers(
        folder, plans, dataset_json, configuration, trust
    )
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    with _quietly():
        try:
            trainer_class = recursive_find_trainer_class_by_name(trainer_name)
        except Exception:  # noqa: BLE001 - nnU-Net raises a bare RuntimeError when not found
            trainer_class = None
    if trainer_class is None:
        raise ValueError(
            f"{folder}: trainer {trainer_name!r} is not part of the installed nnunetv2; install "
            "the package that defines it"
        )
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    with _quietly():
        network = trainer_class.build_network_architecture(
            plans_manager,
            configuration_manager,
            channels,
            label_manager.num_segmentation_heads,
            enable_deep_supervision=False,
        )
    for fold, state in zip(chosen, parameters, strict=True):
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise ValueError(
                f"{folder / f'fold_{fold}' / checkpoint}: the weights do not fit the network "
                f"planned in plans.json ({first})"
            ) from None
    network.load_state_dict(parameters[0])
    return NnUNetModel(
        folder=folder,
        configuration=configuration,
        folds=list(chosen),
        checkpoint=checkpoint,
        plans=plans,
        dataset_json=dataset_json,
        trainer_name=trainer_name,
        mirror_axes=mirror_axes,
        parameters=parameters,
        network=network.eval(),
        _managers=(plans_manager, configuration_manager),
    )
