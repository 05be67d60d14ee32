"""The JSON description of a model: what goes in, what comes out, and how to build it.

A model folder holds ``model.json`` (this spec) beside its weights. Every field is checked on
load, and an error names the file and the field in words, for example
``"model.json: unknown architecture 'foo' (known: unet)"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core.display.label_colors import DEFAULT_LABEL_COLORS
from core.models.architectures import known_architectures
from core.models.preprocessing import known_transforms
from core.probability_calibration.settings import ProbabilityCalibration

__all__ = [
    "EXTERNAL_ARCHITECTURES",
    "SPEC_FORMAT_VERSION",
    "ModelSpec",
]

SPEC_FORMAT_VERSION = 1

#: Architecture names for networks whose code travels with the file instead of the registry,
#: or that another framework builds and runs (core.models.frameworks).
EXTERNAL_ARCHITECTURES = ("torchscript", "pickled-module", "nnunetv2", "monai-bundle")

_ACTIVATIONS = ("softmax", "sigmoid")
_MODES = ("2d", "3d")


def _default_colors(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours for ``n`` classes: black background, then a fixed qualitative palette."""
    palette = DEFAULT_LABEL_COLORS
    return [(0, 0, 0)] + [palette[i % len(palette)] for i in range(n - 1)]


#: JSON type of each spec field, and of its items for lists ("list of str" ...). A string such
#: as ``"class_names": "abcd"`` would otherwise become four classes.
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], type | tuple[type, ...] | None]] = {
    "architecture": (str, None),
    "class_names": (list, str),
    "in_channels": (int, None),
    "arguments": (dict, None),
    "class_colors": (list, list),
    "activation": (str, None),
    "preprocessing": (list, dict),
    "mode": (str, None),
    "patch_size": ((list, type(None)), int),
    "size_divisor": (int, None),
    "name": (str, None),
    "description": (str, None),
    "quantization": ((dict, type(None)), None),
    "calibration": ((dict, type(None)), None),
}

_JSON_NAMES = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _json_kind(value: Any) -> str:
    return {bool: "a boolean", float: "a number"}.get(type(value)) or _JSON_NAMES.get(
        type(value), type(value).__name__
    )


def _check_json_types(data: dict[str, Any], source: str) -> None:
    """Raise ValueError naming the field whose JSON value has the wrong type."""
    for name, value in data.items():
        if name not in _FIELD_TYPES:
            continue  # a field without a JSON type rule is checked by validate() alone
        kind, item_kind = _FIELD_TYPES[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python but never a count or a size in a spec.
        if isinstance(value, bool) or not isinstance(value, kinds):
            wanted = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            raise ValueError(f"{source}: {name} must be {wanted}, not {_json_kind(value)}")
        if item_kind is not None and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, item_kind):
                    wanted = _JSON_NAMES.get(item_kind, item_kind.__name__)
                    raise ValueError(
                        f"{source}: {name}[{index}] must be {wanted}, not {_json_kind(item)}"
                    )


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to run a network besides its weights.

    Parameters
    ----------
    architecture : str
        A registered architecture name (``"unet"``) or one of :data:`EXTERNAL_ARCHITECTURES`
        for TorchScript files and (trusted) pickled modules.
    class_names : tuple of str
        One name per output channel, background first for softmax models.
    in_channels : int
        Input channels the network expects (1 grey, 3 RGB).
    arguments : dict
        Keyword arguments of the architecture builder (``{"dims": 2, "depth": 3, ...}``).
    class_colors : tuple of (r, g, b)
        Display colour per class, 0-255; a default palette when empty.
    activation : {'softmax', 'sigmoid'}
        Turns logits into probabilities (softmax: exclusive classes; sigmoid: independent).
    preprocessing : tuple of dict
        Intensity transforms applied in order, each ``{"name": ..., **parameters}``; see
        :mod:`core.models.preprocessing` for the names.
    mode : {'2d', '3d'}
        ``"2d"`` runs slice by slice along voxel axis k; ``"3d"`` runs on 3-D patches.
    patch_size : tuple of int or None
        Sliding-window patch size (2 values for 2-D, 3 for 3-D); None runs whole slices
        (2-D) or the whole volume (3-D).
    size_divisor : int
        Input sizes are padded up to a multiple of this (a U-Net of depth d needs ``2 ** d``).
    name : str
        Short display name ("demo-ct-unet"); the folder name when empty.
    description : str
        Free text: what the model segments and how it was trained.
    quantization : dict or None
        Metadata of a quantized variant (bits, method, base model), None for float models.
    calibration : dict or None
        Probability calibration (temperature or per-class scaling of the logits, and the
        decision guard), applied to every prediction; see
        :class:`core.probability_calibration.ProbabilityCalibration`. None: uncalibrated.
    """

    architecture: str
    class_names: tuple[str, ...]
    in_channels: int = 1
    arguments: dict[str, Any] = field(default_factory=dict)
    class_colors: tuple[tuple[int, int, int], ...] = ()
    activation: str = "softmax"
    preprocessing: tuple[dict[str, Any], ...] = ()
    mode: str = "2d"
    patch_size: tuple[int, ...] | None = None
    size_divisor: int = 1
    name: str = ""
    description: str = ""
    quantization: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Normalise containers so specs built in code and read from JSON compare equal.
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        colors = self.class_colors or _default_colors(len(self.class_names))
        object.__setattr__(self, "class_colors", tuple(tuple(int(v) for v in c) for c in colors))
        object.__setattr__(self, "preprocessing", tuple(dict(p) for p in self.preprocessing))
        object.__setattr__(self, "arguments", dict(self.arguments))
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(n) for n in self.patch_size))
        self.validate()

    @property
    def num_classes(self) -> int:
        """Number of output channels."""
        return len(self.class_names)

    @property
    def probability_calibration(self) -> ProbabilityCalibration | None:
        """The parsed ``calibration`` field (None for an uncalibrated model)."""
        if self.calibration is None:
            return None
        return ProbabilityCalibration.from_dict(self.calibration, self.num_classes)

    @property
    def spatial_dims(self) -> int:
        """2 for slice-wise models, 3 for volumetric ones."""
        return 2 if self.mode == "2d" else 3

    def validate(self, source: str = "model spec") -> None:
        """Check every field; raise ValueError naming ``source`` and the field on a problem."""

        def fail(problem: str) -> None:
            raise ValueError(f"{source}: {problem}")

        known = known_architectures()
        if self.architecture not in known and self.architecture not in EXTERNAL_ARCHITECTURES:
            fail(f"unknown architecture {self.architecture!r} (known: {', '.join(known)})")
        if not self.class_names:
            fail("class_names is empty: a model needs at least one output class")
        if len(set(self.class_names)) != len(self.class_names):
            fail(f"class_names has duplicates: {list(self.class_names)}")
        if len(self.class_colors) != len(self.class_names):
            fail(
                f"class_colors has {len(self.class_colors)} entries but there are "
                f"{len(self.class_names)} classes"
            )
        for color in self.class_colors:
            if len(color) != 3 or not all(0 <= v <= 255 for v in color):
                fail(f"class_colors entry {list(color)} is not three values in 0-255")
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            fail(f"in_channels must be a positive integer, got {self.in_channels!r}")
        if self.activation not in _ACTIVATIONS:
            fail(f"activation must be one of {', '.join(_ACTIVATIONS)}, got {self.activation!r}")
        if self.mode not in _MODES:
            fail(f"mode must be '2d' or '3d', got {self.mode!r}")
        if self.patch_size is not None:
            if len(self.patch_size) != self.spatial_dims:
                fail(
                    f"patch_size {list(self.patch_size)} needs {self.spatial_dims} values for "
                    f"mode {self.mode!r}"
                )
            if min(self.patch_size) < 1:
                fail(f"patch_size {list(self.patch_size)} has a non-positive size")
        if not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            fail(f"size_divisor must be a positive integer, got {self.size_divisor!r}")
        if self.calibration is not None:
            ProbabilityCalibration.from_dict(self.calibration, self.num_classes, source)
        transforms = known_transforms()
        for index, step in enumerate(self.preprocessing):
            step_name = step.get("name")
            if step_name not in transforms:
                fail(
                    f"preprocessing[{index}] has unknown transform {step_name!r} "
                    f"(known: {', '.join(transforms)})"
                )

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON-compatible values (with a format version)."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["class_colors"] = [list(c) for c in self.class_colors]
        data["preprocessing"] = [dict(p) for p in self.preprocessing]
        data["patch_size"] = list(self.patch_size) if self.patch_size is not None else None
        data["format_version"] = SPEC_FORMAT_VERSION
        return data

    def to_json(self) -> str:
        """The spec as an indented JSON document."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model spec") -> ModelSpec:
        """Build a spec from parsed JSON; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("format_version", SPEC_FORMAT_VERSION)
        if version != SPEC_FORMAT_VERSION:
            raise ValueError(
                f"{source}: format_version {version!r} is not supported "
                f"(this segbench reads {SPEC_FORMAT_VERSION})"
            )
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)}")
        for required in ("architecture", "class_names"):
            if required not in data:
                raise ValueError(f"{source}: missing required field {required!r}")
        _check_json_types(data, source)
        try:
            return cls(**data)
        except ValueError as error:
            message = str(error)
            if message.startswith("model spec: "):
                message = message[len("model spec: ") :]
            raise ValueError(f"{source}: {message}") from None
        except TypeError as error:
            raise ValueError(f"{source}: a field has the wrong type ({error})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model spec") -> ModelSpec:
        """Parse a JSON document (``source`` names the file in error messages)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from None
        return cls.from_dict(data, source)

    @classmethod
    def read(cls, path: str | Path) -> ModelSpec:
        """Read a spec file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"{path}: cannot read the model spec ({error.strerror})") from None
        return cls.from_json(text, source=str(path))

    def write(self, path: str | Path) -> None:
        """Write the spec as JSON to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def with_changes(self, **changes: Any) -> ModelSpec:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)
