"""MONAI bundle folders, run by the bundle's own transforms, inferer and postprocessing.

A bundle holds ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript). Opening it builds, with
MONAI's own :class:`monai.bundle.ConfigParser`, the network from ``network_def``, the
``preprocessing`` transforms, the ``inferer``, and from ``postprocessing`` the transforms that
turn logits into probabilities on the input grid (``Activationsd`` and ``Invertd``, in the
bundle's order). The postprocessing steps after them (``AsDiscreted``, ``SaveImaged``,
connected components, ...) decide or write masks; segbench makes those decisions itself from the
probabilities, so they are read for the activation only and never run.

Trust. A bundle config is a program: strings starting with ``$`` are Python expressions, and
``_target_`` names any callable to import and call. Before anything is parsed, the raw JSON/YAML
of every entry that gets instantiated (and of every ``@id`` it references) is inspected: an
expression, a ``_target_`` outside MONAI's networks, transforms, inferers and image readers (a
bare MONAI name is looked up the way MONAI does; ``monai.utils.misc.run_cmd`` exists, so "any
MONAI name" would not be safe), a file-writing transform, a ``reader``/``writer``/``merger_cls``
string that MONAI would import by name (``LoadImaged(reader="os.system", command=...)`` runs a
shell command), a macro (``%``) or ``_mode_: debug`` is code and needs ``trust=True``. The
ids ``bundle_root`` and ``device`` are set by segbench before parsing, so the expressions zoo
bundles keep there never run.

Input. The bundle's preprocessing starts with ``LoadImaged``, which expects a file name. Rather
than write the image to a temporary file or read its file a second time, segbench runs the
bundle's own ``LoadImaged`` with a runtime reader (``LoadImaged.__call__(data, reader=...)``,
MONAI's hook for this) that hands over the :class:`~core.io.image.Image` already in memory, with
the metadata MONAI's NIfTI reader produces (affine, original affine, spatial shape, channel
dimension). Everything after the reader is the bundle's code path: LoadImaged's dtype, channel
and metadata handling, then the rest of its ``Compose`` (``Compose.__call__(data, start=...)``).
This works for images not read from a file of their own (a DICOM series, one volume of a 4-D
file, a multi-channel case) and puts the inverted probabilities exactly on the image's grid; on a
NIfTI file it gives the same tensor and affine as the bundle's ``LoadImaged`` reading the file
(the tests compare against MONAI reading the file). A 2-D bundle gets a natural image as MONAI's
PILReader gives it (columns first, no affine) and a volume plane by plane along voxel axis k,
each plane as MONAI's NIfTI reader gives a 2-D file.

Inference then follows MONAI's ``SupervisedEvaluator``: collate the item into a batch, run the
inferer with the network under ``torch.no_grad``, decollate, and apply the postprocessing
transforms to the item (``{"image": ..., "pred": ...}``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import pydoc
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device
from core.io.image import Image
from core.jobs import CancelToken, Progress, ProgressCallback, report
from core.models.frameworks import DEPLOY_MEMBER_FILE
from core.models.frameworks.checkpoints import read_checkpoint
from core.models.frameworks.common import (
    background_for_multilabel,
    load_member_state,
    random_patches,
    read_json,
    stack_foreground_patches,
)
from core.models.trust import UntrustedCodeError

__all__ = [
    "CONFIG_NAMES",
    "MONAI_BUNDLE_FRAMEWORK",
    "MonaiBundleModel",
    "is_monai_bundle",
    "open_monai_bundle",
]

MONAI_BUNDLE_FRAMEWORK = "MONAI bundle"
#: Inference configs looked for in ``configs/``, in this order.
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: Weight files looked for in ``models/``, in this order (a state dict is quantizable).
WEIGHT_NAMES = ("model.pt", "model.ts")
#: The key MONAI's SupervisedEvaluator reads the network input from and writes its output to.
IMAGE_KEY = "image"
PRED_KEY = "pred"
#: Ids segbench sets itself before parsing (their raw values, often expressions, never run).
_OVERRIDDEN_IDS = ("bundle_root", "device")
#: Modules whose classes and functions a config may name without being code: MONAI's networks,
#: transforms, inferers and image readers (dotted components of the defining module).
_SAFE_MONAI_PARTS = ("networks", "transforms", "inferers")
_SAFE_MONAI_MODULES = ("monai.data.image_reader",)
#: Inside those, what still runs or writes more than a network or a transform should.
_UNSAFE_MONAI_MODULES = ("monai.networks.utils",)
_FILE_WRITING = re.compile(r"^(Save|Write)")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SAFE_MODES = ("default", "callable")
#: Arguments MONAI resolves by name itself, importing and calling what a string names
#: (LoadImage's reader, SaveImage's writer, PatchInferer's merger).
_LOCATED_ARGUMENTS = ("reader", "writer", "merger_cls")


def is_monai_bundle(path: Path) -> bool:
    """True for a folder with ``configs/metadata.json``, an inference config and weights."""
    return (
        path.is_dir()
        and (path / "configs" / "metadata.json").is_file()
        and any((path / "configs" / name).is_file() for name in CONFIG_NAMES)
        and any((path / "models" / name).is_file() for name in WEIGHT_NAMES)
    )


@contextlib.contextmanager
def _quiet_monai() -> Iterator[None]:
    """Hide MONAI's notices about its own defaults and optional GPU decoders.

    They would land in the middle of the app's output (and break the commands' one-line
    errors) while saying nothing about the bundle.
    """
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*nvImageCodec")
            yield
    finally:
        plugin_log.setLevel(level)


@contextlib.contextmanager
def _parsing(
    config: dict[str, Any], folder: Path, device: torch.device, *, trusted: bool
) -> Iterator[Any]:
    """MONAI's ConfigParser over ``config``, with ``bundle_root`` and ``device`` set by segbench.

    A trusted bundle may name its own code (``scripts.transforms.X``): its folder is importable
    while parsing, as MONAI's ``ConfigWorkflow.run`` makes it.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser(copy.deepcopy(config))
    parser["bundle_root"] = str(folder)
    parser["device"] = device
    root = str(folder)
    added = trusted and root not in sys.path
    if added:
        sys.path.insert(1, root)
    try:
        with _quiet_monai():
            yield parser
    finally:
        if added:
            sys.path.remove(root)


def _read_config(path: Path) -> dict[str, Any]:
    """The raw config (JSON, or YAML with MONAI's safe loader), no expression evaluated."""
    from monai.bundle import ConfigParser

    try:
        data = ConfigParser.load_config_file(str(path))
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror})") from None
    except Exception as error:  # noqa: BLE001 - json and yaml raise their own error types
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a readable bundle config ({first})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of ids, got {type(data).__name__}")
    return data


# -- reading raw configs without running them ------------------------------------------------
def _split(id_: str) -> list[str]:
    from monai.bundle.reference_resolver import ReferenceResolver

    return ReferenceResolver.split_id(ReferenceResolver.normalize_id(id_)) if id_ else []


def _raw_get(config: dict[str, Any], id_: str, source: Path) -> Any:
    """The raw value at a MONAI id (``"a::b::0"``), as written in the file."""
    node: Any = config
    for part in _split(id_):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ValueError(f"{source}: the config refers to {id_!r}, which it lacks") from None
    return node


@functools.cache
def _locator() -> Any:
    """MONAI's table of its own classes and functions (built once: it scans every module)."""
    from monai.bundle.config_item import ComponentLocator

    return ComponentLocator()


def _component_module(target: str) -> tuple[str, str] | None:
    """(defining module, name) of a ``_target_`` MONAI resolves, None when MONAI does not.

    Bare names are looked up in MONAI's own component table, as the parser does; dotted names
    are resolved only under ``monai.`` (already imported), so nothing else gets imported.
    """
    if "." not in target:
        modules = _locator().get_component_module_name(target)
        if isinstance(modules, list):
            modules = modules[0]  # what ConfigComponent instantiates when names clash
        return (modules, target) if modules else None
    if not target.startswith("monai."):
        return None
    found = pydoc.locate(target)
    if found is None or not hasattr(found, "__module__"):
        return None
    return str(found.__module__), target.rsplit(".", 1)[1]


def _is_safe_monai(module: str, name: str) -> bool:
    if module.startswith(_UNSAFE_MONAI_MODULES):
        return False
    if module.startswith("monai.transforms.io") and _FILE_WRITING.match(name):
        return False
    parts = module.split(".")
    return parts[0] == "monai" and (
        any(part in _SAFE_MONAI_PARTS for part in parts[1:])
        or module.startswith(_SAFE_MONAI_MODULES)
    )


def _is_known_by_name(name: str) -> bool:
    """True for a name MONAI's LoadImage/PatchInferer find among their own (not by import)."""
    from monai.transforms.io.array import SUPPORTED_READERS

    if name.lower() in SUPPORTED_READERS:
        return True
    located = _component_module(name) if _PLAIN_NAME.match(name) else None
    return located is not None and _is_safe_monai(*located)


def _target_class(target: Any) -> type | None:
    """The class a raw ``_target_`` names, when it is a safe MONAI name (else None)."""
    if not isinstance(target, str) or not _PLAIN_NAME.match(target):
        return None
    located = _component_module(target)
    if located is None or not _is_safe_monai(*located):
        return None
    found = pydoc.locate(f"{located[0]}.{located[1]}")
    return found if isinstance(found, type) else None


def _check_is_data(config: dict[str, Any], roots: Sequence[str], source: Path) -> set[str]:
    """Refuse entries under ``roots`` (and what they reference) that would run code.

    Returns
    -------
    set of str
        The top-level ids reached (what the parser needs to see).

    Raises
    ------
    UntrustedCodeError
        On the first expression, non-MONAI or unsafe ``_target_``, macro or debug mode.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    def refuse(id_: str, what: str) -> None:
        raise UntrustedCodeError(
            f"{source}: {id_!r} {what}, so opening the bundle would run code from it; pass "
            "trust=True only if you trust where the bundle came from"
        )

    reached: set[str] = set()
    pending = list(roots)
    seen: set[str] = set()
    while pending:
        root = ReferenceResolver.normalize_id(pending.pop())
        if root in seen:
            continue
        seen.add(root)
        top = _split(root)[0]
        reached.add(top)
        if top in _OVERRIDDEN_IDS:
            continue
        stack: list[tuple[str, Any]] = [(root, _raw_get(config, root, source))]
        while stack:
            id_, value = stack.pop()
            if isinstance(value, dict):
                if "_target_" in value:
                    target = value["_target_"]
                    if not isinstance(target, str) or not _PLAIN_NAME.match(target):
                        refuse(id_, f"has a _target_ that is not a plain name ({target!r})")
                    located = _component_module(target)
                    if located is None:
                        refuse(id_, f"names _target_ {target!r}, which is not part of MONAI")
                    elif not _is_safe_monai(*located):
                        refuse(
                            id_,
                            f"names _target_ {target!r} ({located[0]}), which runs or writes more "
                            "than a MONAI network, transform or inferer",
                        )
                    mode = value.get("_mode_", "default")
                    if mode not in _SAFE_MODES:
                        refuse(id_, f"asks for _mode_ {mode!r}")
                    for argument in _LOCATED_ARGUMENTS:
                        names = value.get(argument)
                        for name in names if isinstance(names, list) else [names]:
                            if (
                                isinstance(name, str)
                                and not name.startswith(("$", "@"))  # refused or followed below
                                and not _is_known_by_name(name)
                            ):
                                refuse(
                                    f"{id_}::{argument}",
                                    f"names {name!r}, which MONAI would import and call",
                                )
                items: Any = value.items()
            elif isinstance(value, list):
                items = enumerate(value)
            else:
                items = ()
            for key, sub in items:
                stack.append((f"{id_}::{key}" if id_ else str(key), sub))
            if not isinstance(value, str):
                continue
            if value.startswith("$"):
                refuse(id_, f"holds a Python expression ({value[:80]!r})")
            if value.startswith("%"):
                refuse(id_, f"pulls config in by macro ({value[:80]!r}), which is not inspected")
            resolved = ConfigParser.resolve_relative_ids(id_, value)
            pending.extend(ReferenceResolver.match_refs_pattern(resolved))
    return reached


# -- what the postprocessing says ------------------------------------------------------------
@dataclass(frozen=True)
class _Postprocessing:
    """What segbench takes from the bundle's postprocessing (read raw, before parsing)."""

    #: Ids of the entries that run (Activationsd, Invertd), in the bundle's order.
    ids: tuple[str, ...]
    #: ``"softmax"`` or ``"sigmoid"``.
    activation: str
    #: True when the bundle has its own Activationsd (else segbench adds MONAI's).
    has_activation: bool
    #: True when the bundle has its own Invertd (else segbench adds MONAI's).
    has_invert: bool


def _read_postprocessing(config: dict[str, Any], source: Path) -> _Postprocessing:
    """Find Activationsd/Invertd and the activation in the raw ``postprocessing``.

    Raises
    ------
    UntrustedCodeError
        The postprocessing is an expression (it can only be known by running it).
    """
    from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd

    raw = config.get("postprocessing")
    entries: list[tuple[str, Any]] = []
    if isinstance(raw, dict) and _target_class(raw.get("_target_")) is Compose:
        transforms = raw.get("transforms", [])
        if isinstance(transforms, list):
            entries = [(f"postprocessing::transforms::{i}", t) for i, t in enumerate(transforms)]
        else:
            raise UntrustedCodeError(
                f"{source}: 'postprocessing::transforms' is not a plain list ({transforms!r:.80}),"
                " so finding its activation would run code from the bundle; pass trust=True only "
                "if you trust where the bundle came from"
            )
    elif raw is not None:
        raise UntrustedCodeError(
            f"{source}: 'postprocessing' is not a plain Compose ({raw!r:.80}), so finding its "
            "activation would run code from the bundle; pass trust=True only if you trust where "
            "the bundle came from"
        )
    ids: list[str] = []
    activation: str | None = None
    has_activation = has_invert = False
    argmax = threshold = False
    for id_, entry in entries:
        if not isinstance(entry, dict) or entry.get("_disabled_") is True:
            continue
        kind = _target_class(entry.get("_target_"))
        if kind is Activationsd:
            has_activation = True
            ids.append(id_)
            if entry.get("sigmoid") is True:
                activation = "sigmoid"
            elif entry.get("softmax") is True:
                activation = "softmax"
        elif kind is Invertd:
            has_invert = True
            ids.append(id_)
        elif kind is AsDiscreted:
            argmax = argmax or entry.get("argmax") is True
            threshold = threshold or entry.get("threshold") is not None
    if activation is None:
        if has_activation:
            raise ValueError(
                f"{source}: the postprocessing's Activationsd applies neither softmax nor "
                "sigmoid; segbench needs probabilities"
            )
        # Without an Activationsd, the discretisation says what the logits mean.
        activation = "sigmoid" if threshold and not argmax else "softmax"
    return _Postprocessing(tuple(ids), activation, has_activation, has_invert)


# -- the image as LoadImaged's input -----------------------------------------------------------
@dataclass(frozen=True)
class _Input:
    """One file's worth of input for the bundle's LoadImaged, as a MONAI reader would give it.

    Attributes
    ----------
    array : numpy.ndarray
        Voxels, channels first when ``meta["original_channel_dim"]`` is 0.
    meta : dict
        What MONAI's readers put in the metadata (affine, spatial shape, channel dimension).
    name : str
        The file name LoadImaged records.
    transposed : bool
        Rows and columns swapped, as MONAI's PILReader hands over natural images.
    """

    array: np.ndarray
    meta: dict[str, Any]
    name: str
    transposed: bool = False

    def reader(self) -> Any:
        """A MONAI ImageReader handing over this input (LoadImaged's runtime ``reader``)."""
        from monai.data import ImageReader

        source = self

        class SegbenchImageReader(ImageReader):
            """The segbench image in memory, with the metadata MONAI's own readers give."""

            def verify_suffix(self, filename: Any) -> bool:
                return True

            def read(self, data: Any, **kwargs: Any) -> Any:
                return source

            def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
                return source.array, copy.deepcopy(source.meta)

        return SegbenchImageReader()


def _channel_arrays(images: Sequence[Image]) -> list[np.ndarray]:
    """One ``(I, J, K)`` array per input channel (an RGB image gives three)."""
    first = images[0]
    arrays: list[np.ndarray] = []
    for image in images:
        if image.shape3 != first.shape3:
            raise ValueError(
                f"{image.path}: channel grid {image.shape3} differs from {first.path}'s "
                f"{first.shape3}"
            )
        data = np.asarray(image.array)
        arrays.extend(np.moveaxis(data, -1, 0) if image.is_rgb else [data])
    return arrays


def _with_channels(planes: list[np.ndarray]) -> tuple[np.ndarray, Any]:
    """One array and its ``original_channel_dim``, as MONAI's readers stack several files."""
    if len(planes) == 1:
        return planes[0], "no_channel"
    return np.stack(planes), 0


def _inputs(images: Sequence[Image], spatial_dims: int) -> list[_Input]:
    """What the bundle's LoadImaged reads for ``images``: the volume, or its 2-D planes.

    A 3-D bundle gets the volume with the image's affine, as MONAI's NIfTI reader gives it. A
    2-D bundle gets a natural image as MONAI's PILReader gives it (rows and columns swapped, no
    affine), and a volume slice by slice along voxel axis k, each with the affine of its plane
    (as MONAI's NIfTI reader gives a 2-D file).
    """
    first = images[0]
    arrays = _channel_arrays(images)
    name = str(first.path) if first.path is not None else "image"
    if spatial_dims == 3:
        array, channel_dim = _with_channels(arrays)
        meta = {
            "affine": first.affine.copy(),
            "original_affine": first.affine.copy(),
            "spatial_shape": np.asarray(first.shape3),
            "original_channel_dim": channel_dim,
            "space": "RAS",  # segbench affines map to RAS+, as nibabel's do
        }
        return [_Input(array, meta, name)]
    if first.is_natural:
        array, channel_dim = _with_channels([a[:, :, 0].T for a in arrays])
        columns, rows = first.shape3[1], first.shape3[0]
        meta = {"spatial_shape": np.asarray((columns, rows)), "original_channel_dim": channel_dim}
        return [_Input(array, meta, name, transposed=True)]
    planes = []
    for k in range(first.shape3[2]):
        array, channel_dim = _with_channels([a[:, :, k] for a in arrays])
        affine = first.affine.copy()
        affine[:3, 3] += affine[:3, 2] * k  # the plane's origin
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(first.shape3[:2]),
            "original_channel_dim": channel_dim,
            "space": "RAS",
        }
        planes.append(_Input(array, meta, f"{name} (slice {k})"))
    return planes


@dataclass
class _Pipeline:
    """The bundle's parsed transforms and inferer for one device."""

    preprocessing: Any
    inferer: Any
    postprocessing: list[Callable[[dict[str, Any]], dict[str, Any]]]


@dataclass
class MonaiBundleModel:
    """A MONAI bundle: its checked config, its network and the facts of its metadata.

    Attributes
    ----------
    folder : pathlib.Path
        The bundle folder.
    config_path : pathlib.Path
        ``configs/inference.json`` (or ``.yaml``).
    weights_path : pathlib.Path
        ``models/model.pt`` or ``models/model.ts``.
    config : dict
        The parts of the raw config the parser sees (the inspected top-level ids).
    metadata : dict
        ``configs/metadata.json``.
    network : torch.nn.Module
        The network with the bundle's weights, in eval mode on the CPU.
    activation : str
        ``"softmax"`` or ``"sigmoid"``, from the postprocessing.
    trusted : bool
        Opened with ``trust=True``: the config may run code, and the bundle's folder is
        importable while it is parsed (for its ``scripts``).
    """

    folder: Path
    config_path: Path
    weights_path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    network: nn.Module
    activation: str
    postprocessing: _Postprocessing = field(repr=False)
    input_channels: int = 1
    output_channels: int = 1
    patch_size: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    trusted: bool = False

    framework = MONAI_BUNDLE_FRAMEWORK

    # -- facts -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.folder.name)

    @property
    def version(self) -> str:
        return str(self.metadata.get("version") or "")

    @property
    def spatial_dims(self) -> int:
        if self.patch_size is not None:
            return len(self.patch_size)
        dims = _network_def(self.config).get("spatial_dims", 3)
        return dims if isinstance(dims, int) else 3  # not a literal: the usual 3-D

    def _output_names(self) -> list[str]:
        """One name per network output channel: metadata's ``channel_def``, else "class i"."""
        outputs = (self.metadata.get("network_data_format") or {}).get("outputs") or {}
        pred = outputs.get(PRED_KEY) or next(iter(outputs.values()), {})
        channels = pred.get("channel_def") if isinstance(pred, dict) else None
        if isinstance(channels, dict) and len(channels) == self.output_channels:
            try:
                return [str(channels[k]) for k in sorted(channels, key=int)]
            except ValueError:
                pass
        return [f"class {i}" for i in range(self.output_channels)]

    def class_names(self) -> list[str]:
        """One name per probability channel; sigmoid bundles get a background channel first."""
        names = self._output_names()
        if self.activation != "sigmoid":
            return names
        # The added channel: no output on. Named so that names stay unique even when the
        # bundle calls one of its outputs "background".
        return ["background" if "background" not in names else "none", *names]

    def describe(self) -> dict[str, Any]:
        """Framework facts for the model line and ``info``."""
        return {
            "framework": self.framework,
            "bundle": self.name,
            "version": self.version,
            "config": self.config_path.name,
            "weights": self.weights_path.name,
            "network": _network_class(self.network),
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "activation": self.activation,
            "patch_size": list(self.patch_size) if self.patch_size else None,
            "spacing_mm": list(self.spacing) if self.spacing else None,
        }

    # -- the one member ----------------------------------------------------------------------
    def member_names(self) -> list[str]:
        """``["network"]``: a bundle runs one network."""
        return ["network"]

    def members(self) -> list[nn.Module]:
        """A copy of the network (quantization changes it in place)."""
        return [copy.deepcopy(self.network).eval()]

    def with_members(self, modules: Sequence[nn.Module]) -> MonaiBundleModel:
        """The same bundle running the weights of ``modules[0]`` (e.g. fake-quantized ones).

        BatchNorms that quantization folded into their convolution become identities, so the
        network keeps the layout of ``network_def`` (and MONAI can load what is saved).
        """
        if len(modules) != 1:
            raise ValueError(f"expected 1 network for a MONAI bundle, got {len(modules)}")
        state = {k: v.detach().cpu().clone() for k, v in modules[0].state_dict().items()}
        network = copy.deepcopy(self.network)
        load_member_state(network, state, str(self.folder))
        return replace(self, network=network.eval())

    def with_runtime(self, networks: Sequence[nn.Module]) -> MonaiBundleModel:
        """The same bundle with its network's forward pass run by ``networks[0]`` (ONNX Runtime,
        :func:`core.deploy.onnx_runtime.with_backend`); the bundle's pipeline is unchanged."""
        if len(networks) != 1:
            raise ValueError(f"expected 1 network for a MONAI bundle, got {len(networks)}")
        return replace(self, network=networks[0])

    def layout_names(self, names: set[str]) -> set[str]:
        """``configs`` and ``models`` among ``names``: what a saved bundle consists of."""
        return names & {"configs", "models"}

    def member_folders(self, folder: Path) -> list[Path]:
        """``[folder / "models"]``: where a bundle keeps its network."""
        return [folder / "models"]

    def save_layout(self, folder: Path) -> None:
        """Write what the bundle is besides its weights: its ``configs`` folder, copied."""
        shutil.copytree(self.folder / "configs", folder / "configs", dirs_exist_ok=True)

    def deploy_facts(self) -> dict[str, Any]:
        """Nothing beyond the configs: a bundle's configs say all its pipeline needs."""
        return {}

    def save_members(self, folder: Path) -> list[Path]:
        """Write a bundle folder MONAI opens: the configs copied, the network's weights saved.

        A state-dict bundle gets ``models/model.pt`` (a plain state dict, as MONAI's
        CheckpointLoader reads it); a TorchScript one ``models/model.ts``.

        Returns
        -------
        list of pathlib.Path
            ``[folder / "models"]``, where the network's weights lie.
        """
        self.save_layout(folder)
        (models,) = self.member_folders(folder)
        models.mkdir(parents=True, exist_ok=True)
        if isinstance(self.network, torch.jit.ScriptModule):
            torch.jit.save(self.network, str(models / "model.ts"))
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
            torch.save(state, models / "model.pt")
        return [models]

    # -- the bundle's pipeline -------------------------------------------------------------
    def pipeline(self, device: torch.device) -> _Pipeline:
        """The bundle's preprocessing, inferer and probability postprocessing for ``device``."""
        from monai.transforms import Activationsd, Invertd

        with _parsing(self.config, self.folder, device, trusted=self.trusted) as parser:
            preprocessing = parser.get_parsed_content("preprocessing")
            inferer = parser.get_parsed_content("inferer")
            post = [parser.get_parsed_content(id_) for id_ in self.postprocessing.ids]
        if not self.postprocessing.has_activation:
            # MONAI's own Activationsd first, as zoo bundles order it.
            post.insert(0, Activationsd(keys=PRED_KEY, **{self.activation: True}))
        if not self.postprocessing.has_invert:
            # The probabilities must come back to the image's grid even where the bundle keeps
            # them on its own.
            post.append(
                Invertd(keys=PRED_KEY, transform=preprocessing, orig_keys=IMAGE_KEY, to_tensor=True)
            )
        return _Pipeline(preprocessing, inferer, post)

    def preprocess(self, images: Sequence[Image], pipeline: _Pipeline) -> list[dict[str, Any]]:
        """The bundle's preprocessing of one case: one item per input of its LoadImaged.

        A 3-D bundle gives one item, a 2-D bundle one per plane; each holds ``"image"``, a
        MetaTensor ``(C, ...)`` in the network's input space.
        """
        return [self._preprocess(item, images, pipeline) for item in self._inputs(images)]

    def _inputs(self, images: Sequence[Image]) -> list[_Input]:
        if self.spatial_dims == 3 and images[0].is_natural and images[0].is_rgb:
            raise ValueError(f"{images[0].path}: an RGB image cannot feed a 3-D MONAI bundle")
        return _inputs(images, self.spatial_dims)

    def _preprocess(
        self, item: _Input, images: Sequence[Image], pipeline: _Pipeline
    ) -> dict[str, Any]:
        from monai.transforms import Compose, LoadImaged

        preprocessing = pipeline.preprocessing
        steps = list(preprocessing.transforms) if isinstance(preprocessing, Compose) else []
        start = next((i for i, t in enumerate(steps) if isinstance(t, LoadImaged)), None)
        loader = steps[start] if start is not None else LoadImaged(keys=IMAGE_KEY)
        with _quiet_monai():
            data = loader({IMAGE_KEY: item.name}, reader=item.reader())
            if start is not None:
                data = preprocessing(data, start=start + 1)
            else:
                data = preprocessing(data)
        channels = int(data[IMAGE_KEY].shape[0])
        if channels != self.input_channels:
            raise ValueError(
                f"{images[0].path}: the case has {channels} channel(s) but the MONAI bundle "
                f"{self.name} expects {self.input_channels}"
            )
        return data

    def _windows(self, inferer: Any, shape: Sequence[int]) -> int | None:
        """Windows the inferer runs over a preprocessed volume of ``shape`` (None: unknown)."""
        roi = getattr(inferer, "roi_size", None)
        if roi is None:
            return 1 if type(inferer).__name__ == "SimpleInferer" else None
        from monai.data.utils import dense_patch_slices
        from monai.inferers.utils import _get_scan_interval  # the inferer's own tiling
        from monai.utils import ensure_tuple_rep, fall_back_tuple

        dims = len(shape)
        roi = fall_back_tuple(roi, shape)
        size = tuple(max(s, r) for s, r in zip(shape, roi, strict=True))
        overlap = ensure_tuple_rep(getattr(inferer, "overlap", 0.25), dims)
        interval = _get_scan_interval(size, roi, dims, overlap)
        return len(dense_patch_slices(size, roi, interval))

    def predict(
        self,
        images: Sequence[Image],
        *,
        device: str | torch.device = "auto",
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Probabilities on the images' grid, ``(C, I, J, K)`` float32, as the bundle makes them.

        A 2-D bundle runs once per plane along voxel axis k (once for a natural image).
        Sigmoid bundles get a background channel in front (``1 -`` the largest output), so
        channel ``c >= 1`` is output ``c - 1``.
        """
        target = resolve_device(device)
        report(on_progress, Progress(0, None, "MONAI preprocessing", stage="preprocessing"))
        pipeline = self.pipeline(target)
        inputs = self._inputs(images)
        outputs = []
        for index, item in enumerate(inputs):
            label = f"slice {index + 1}/{len(inputs)}, " if len(inputs) > 1 else ""
            data = self._preprocess(item, images, pipeline)
            probs = self._run(data, pipeline, target, label, on_progress, cancel)
            outputs.append(probs.transpose(0, 2, 1) if item.transposed else probs)
        probs = outputs[0] if self.spatial_dims == 3 else np.stack(outputs, axis=-1)
        expected = tuple(images[0].shape3)
        if tuple(probs.shape[1:]) != expected:
            raise ValueError(
                f"{self.config_path}: the postprocessing gave probabilities of shape "
                f"{tuple(probs.shape[1:])}, not the image's grid {expected}"
            )
        if self.activation == "sigmoid":
            probs = background_for_multilabel(probs)
        return np.ascontiguousarray(probs)

    def _run(
        self,
        data: dict[str, Any],
        pipeline: _Pipeline,
        target: torch.device,
        label: str,
        on_progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> np.ndarray:
        """Inferer and postprocessing on one preprocessed item, as SupervisedEvaluator runs them.

        Returns the probabilities ``(C, ...)`` on the grid the bundle's LoadImaged gave.
        """
        from monai.data import decollate_batch, list_data_collate

        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = list_data_collate([data])
        inputs = batch[IMAGE_KEY].to(target)
        total = self._windows(pipeline.inferer, inputs.shape[2:])
        done = {"windows": 0}

        def before_window(_module: nn.Module, args: Any) -> None:
            # Runs before each forward pass of the inferer (a batch of windows).
            if cancel is not None:
                cancel.raise_if_cancelled()
            done["windows"] += int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1
            count = done["windows"] if total is None else min(done["windows"], total)
            report(
                on_progress,
                Progress(
                    count,
                    total,
                    f"MONAI sliding window: {label}window {count}/{total if total else '?'}",
                    stage="inference",
                ),
            )

        # The hook sits on a wrapper: TorchScript networks (model.ts) take no hooks themselves.
        watched = nn.Sequential(self.network.to(target).eval())
        handle = watched.register_forward_pre_hook(before_window)
        try:
            with torch.no_grad(), _quiet_monai():
                pred = pipeline.inferer(inputs, watched)
        finally:
            handle.remove()
            self.network.cpu()
        report(on_progress, Progress(0, None, "MONAI inversion to the image grid", stage="export"))
        # What SupervisedEvaluator hands its postprocessing: the decollated item with "pred".
        item = dict(decollate_batch(batch)[0])
        item[PRED_KEY] = decollate_batch(pred)[0]
        with torch.no_grad(), _quiet_monai():
            for transform in pipeline.postprocessing:
                item = transform(item)
        probs = item[PRED_KEY]
        if torch.is_tensor(probs):
            probs = probs.detach().cpu().numpy()
        return np.asarray(probs, dtype=np.float32)

    def calibration_inputs(
        self, cases: Sequence[Sequence[Image]], *, n: int, seed: int, crop: int | None = None
    ) -> torch.Tensor:
        """Patches of bundle-preprocessed cases: the network's own input space.

        Windows have the inferer's ``roi_size`` (or ``crop`` edges), foreground-rich ones
        preferred as for segbench's own models. A 2-D bundle preprocesses at most ``2 n``
        evenly spaced planes per case (each plane runs the whole preprocessing).
        """
        rng = np.random.default_rng(seed)
        pipeline = self.pipeline(torch.device("cpu"))
        volumes = []
        for case in cases:
            inputs = self._inputs(case)
            picks = np.unique(np.linspace(0, len(inputs) - 1, min(len(inputs), 2 * n)).round())
            for index in picks.astype(int):
                data = self._preprocess(inputs[index], case, pipeline)[IMAGE_KEY]
                volumes.append(np.asarray(data.detach().cpu().numpy(), dtype=np.float32))
        patch = tuple(self.patch_size or volumes[0].shape[1:])
        if crop is not None:
            patch = tuple(min(crop, p) for p in patch)
        count = max(1, math.ceil(2 * n / max(1, len(volumes))))
        candidates: list[np.ndarray] = []
        for volume in volumes:
            candidates.extend(random_patches(volume, patch, count, rng))
        return stack_foreground_patches(candidates, n, rng)


def _network_class(network: nn.Module) -> str:
    if getattr(network, "is_onnx", False):
        return "ONNX (ONNX Runtime)"
    if isinstance(network, torch.jit.ScriptModule):
        return f"TorchScript {network.original_name}"
    return type(network).__name__


def _find(folder: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder}: no {what} ({' or '.join(names)})")


def _load_weights(network: nn.Module, path: Path, trust: bool) -> None:
    """A ``model.pt`` state dict into ``network``, as MONAI's CheckpointLoader reads it."""
    state = read_checkpoint(path, trust=trust)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # CheckpointLoader's {"model": network} layout
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ValueError(
            f"{path}: the weights do not fit the bundle's network_def ({first})"
        ) from None


def _network_def(config: dict[str, Any]) -> dict[str, Any]:
    """The raw ``network_def`` when it is a plain mapping (a trusted one may be an expression)."""
    network_def = config.get("network_def")
    return network_def if isinstance(network_def, dict) else {}


def _input_channels(config: dict[str, Any], metadata: dict[str, Any]) -> int:
    channels = _network_def(config).get("in_channels")
    if isinstance(channels, int):
        return channels
    inputs = (metadata.get("network_data_format") or {}).get("inputs") or {}
    image = inputs.get(IMAGE_KEY) or next(iter(inputs.values()), {})
    return int(image.get("num_channels", 1)) if isinstance(image, dict) else 1


def _output_channels(network: nn.Module, config: dict[str, Any], meta: dict[str, Any]) -> int:
    for value in (
        _network_def(config).get("out_channels"),
        getattr(network, "out_channels", None),
    ):
        if isinstance(value, int):
            return value
    outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
    pred = outputs.get(PRED_KEY) or next(iter(outputs.values()), {})
    if isinstance(pred, dict) and isinstance(pred.get("num_channels"), int):
        return int(pred["num_channels"])
    raise ValueError("the bundle says nowhere how many output channels its network has")


def open_monai_bundle(
    folder: Path, *, trust: bool = False, onnx_network: nn.Module | None = None
) -> MonaiBundleModel:
    """Open a MONAI bundle folder without running code it carries.

    Parameters
    ----------
    folder : pathlib.Path
        ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) and
        ``models/model.pt`` or ``models/model.ts``.
    trust : bool
        Allow config entries that run code (expressions, ``_target_`` outside MONAI) and
        checkpoints that need the full unpickler.
    onnx_network : torch.nn.Module, optional
        The bundle's network as an ONNX Runtime session (``models/model.onnx`` of a deploy
        folder, :mod:`core.deploy.framework_package`): it replaces ``network_def`` and the
        weights, and the bundle's pipeline runs around it.

    Raises
    ------
    ValueError
        Missing or unreadable files, a config without the entries inference needs, weights that
        do not fit the network; all naming the file.
    UntrustedCodeError
        Code would run and ``trust`` is False.
    """
    try:
        import monai  # noqa: F401 - only to say so in words when it is missing
    except ImportError:
        raise ValueError(
            f"{folder}: a MONAI bundle, but MONAI is not installed (pip install monai)"
        ) from None
    metadata = read_json(folder / "configs" / "metadata.json")
    config_path = _find(folder / "configs", CONFIG_NAMES, "inference config")
    if onnx_network is not None:
        weights_path = _find(folder / "models", (DEPLOY_MEMBER_FILE,), "ONNX network")
    else:
        weights_path = _find(folder / "models", WEIGHT_NAMES, "weights")
    raw = _read_config(config_path)
    # A TorchScript or ONNX network is built from its file, not from network_def.
    prebuilt = weights_path.suffix in (".ts", ".onnx")
    needed = (
        ("preprocessing", "inferer") if prebuilt else ("network_def", "preprocessing", "inferer")
    )
    missing = [key for key in needed if key not in raw]
    if missing:
        raise ValueError(f"{config_path}: no {', '.join(repr(m) for m in missing)} entry")

    if trust:
        post = _read_postprocessing_trusted(raw, folder, config_path)
        config = raw
    else:
        post = _read_postprocessing(raw, config_path)
        reached = _check_is_data(raw, [*needed, *post.ids], config_path)
        config = {key: raw[key] for key in reached if key in raw}

    with _parsing(config, folder, torch.device("cpu"), trusted=trust) as parser:
        try:
            if onnx_network is not None:
                network = onnx_network
            elif weights_path.suffix == ".ts":
                network = torch.jit.load(str(weights_path), map_location="cpu")
            else:
                network = parser.get_parsed_content("network_def")
            inferer = parser.get_parsed_content("inferer")
            preprocessing = parser.get_parsed_content("preprocessing")
        except UntrustedCodeError:
            raise
        except Exception as error:  # noqa: BLE001 - MONAI and the bundle raise anything
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f"{config_path}: MONAI could not build the bundle ({first})") from None
    if not isinstance(network, nn.Module):
        raise ValueError(f"{config_path}: network_def is not a torch module")
    if not prebuilt:
        _load_weights(network, weights_path, trust)

    from monai.transforms import Compose, Spacingd

    spacing = None
    if isinstance(preprocessing, Compose):
        for transform in preprocessing.flatten().transforms:
            if isinstance(transform, Spacingd):
                pixdim = transform.spacing_transform.pixdim
                spacing = tuple(float(s) for s in np.atleast_1d(pixdim))
                break
    roi = getattr(inferer, "roi_size", None)
    patch = tuple(int(r) for r in roi) if roi is not None else None
    try:
        outputs = _output_channels(network, config, metadata)
    except ValueError as error:
        raise ValueError(f"{config_path}: {error}") from None
    return MonaiBundleModel(
        folder=folder,
        config_path=config_path,
        weights_path=weights_path,
        config=config,
        metadata=metadata,
        network=network.eval(),
        activation=post.activation,
        postprocessing=post,
        input_channels=_input_channels(config, metadata),
        output_channels=outputs,
        patch_size=patch,
        spacing=spacing,
        trusted=trust,
    )


def _read_postprocessing_trusted(
    config: dict[str, Any], folder: Path, source: Path
) -> _Postprocessing:
    """As :func:`_read_postprocessing`, but a postprocessing that is code may run to be read."""
    try:
        return _read_postprocessing(config, source)
    except UntrustedCodeError:
        pass
    from monai.transforms import Activationsd, Compose

    with _parsing(config, folder, torch.device("cpu"), trusted=True) as parser:
        post = parser.get_parsed_content("postprocessing")
    steps = post.flatten().transforms if isinstance(post, Compose) else [post]
    activation = "softmax"
    for step in steps:
        if isinstance(step, Activationsd):
            activation = "sigmoid" if any(step.sigmoid) else "softmax"
            break
    # The steps cannot be picked out by id here: segbench runs MONAI's own Activationsd and
    # Invertd in their place.
    return _Postprocessing((), activation, False, False)
