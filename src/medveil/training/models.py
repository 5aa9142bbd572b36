"""Classifier factory: ResNet50, MobileNetV2 and InceptionV3 from timm, and a small 4-layer CNN.

Every model takes ONE input channel (timm builds the first convolution with ``in_chans=1``) and
is built from scratch; ``weights=PATH`` starts it from a local state dict instead. Nothing is
ever downloaded.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from medveil.training.stems import create_stem

__all__ = [
    "MODELS", "ModelSpec", "SmallCNN", "StemmedClassifier", "create_model", "get_spec",
    "load_weights",
]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What medveil knows about one architecture.

    Attributes
    ----------
    name : str
        The name :func:`create_model` takes.
    timm_name : str or None
        The timm architecture, or ``None`` for medveil's own :class:`SmallCNN`.
    input_size : int
        Default side of the square input in pixels (the architecture's native size).
    min_input_size : int
        Smallest side the architecture accepts; smaller inputs are refused.
    mean, std : float
        Normalisation that the architecture's published pretrained weights expect on [0, 1]
        input, reduced to one channel (the mean of timm's per-channel constants). Used when
        training with ``normalisation="model"``; by default medveil standardises each dataset on
        its own training split instead (see :mod:`medveil.training.data`).
    first_conv : str
        State-dict prefix of the first convolution (adapted from 3 channels to 1 on loading).
    classifier : str
        State-dict prefix of the classification head (re-initialised when its shape differs).
    """

    name: str
    timm_name: str | None
    input_size: int
    min_input_size: int
    mean: float
    std: float
    first_conv: str
    classifier: str


_IMAGENET_MEAN = sum((0.485, 0.456, 0.406)) / 3
_IMAGENET_STD = sum((0.229, 0.224, 0.225)) / 3

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="resnet50", timm_name="resnet50", input_size=224, min_input_size=32,
            mean=_IMAGENET_MEAN, std=_IMAGENET_STD, first_conv="conv1", classifier="fc",
        ),
        ModelSpec(
            name="mobilenetv2", timm_name="mobilenetv2_100", input_size=224, min_input_size=32,
            mean=_IMAGENET_MEAN, std=_IMAGENET_STD, first_conv="conv_stem", classifier="classifier",
        ),
        # InceptionV3's native input is 299 px; its stem of unpadded strided convolutions and
        # poolings needs at least 75 px, which the smoke tests use.
        ModelSpec(
            name="inceptionv3", timm_name="inception_v3", input_size=299, min_input_size=75,
            mean=0.5, std=0.5, first_conv="Conv2d_1a_3x3.conv", classifier="fc",
        ),
        # SmallCNN has no published weights; (x - 0.5) / 0.5 maps [0, 1] onto [-1, 1].
        ModelSpec(
            name="smallcnn", timm_name=None, input_size=128, min_input_size=16,
            mean=0.5, std=0.5, first_conv="features.0.0", classifier="head.1",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; a ``ValueError`` lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks (32-64-128-256 channels), global pooling, linear head.

    Global average pooling makes it accept any input size of at least 16 px.
    """

    def __init__(self, *, num_classes: int, in_chans: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        widths = (in_chans, 32, 64, 128, 256)
        self.features = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
                for c_in, c_out in pairwise(widths)
            )
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class StemmedClassifier(nn.Module):
    """An input stem (:mod:`medveil.training.stems`) in front of a backbone.

    Reads the data's arrays at their own shape ``(B, 1, n, m)``; the stem makes the backbone's
    square input.
    """

    def __init__(self, *, stem: nn.Module, backbone: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.stem(x))


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 1,
    input_size: int | None = None,
    weights: Path | str | None = None,
    stem: str | None = None,
    in_shape: tuple[int, int] | None = None,
) -> nn.Module:
    """Build a classifier, from scratch or from a local state dict.

    Parameters
    ----------
    name : str
        ``resnet50``, ``mobilenetv2``, ``inceptionv3`` or ``smallcnn``.
    num_classes : int
        Number of output logits (at least 2).
    in_chans : int, default 1
        Input channels.
    input_size : int or None
        Side of the input the model will see; only checked against the architecture's minimum.
    weights : path or None
        A local file (``.pt``/``.pth``/``.bin`` or ``.safetensors``) holding a state dict for the
        same architecture (see :func:`load_weights`). ``None`` (the default) trains from scratch.
        The weights are loaded into the backbone; a stem starts as its own initialisation.
    stem : str or None
        Put the named input stem (:data:`medveil.training.stems.STEMS`) in front of the
        backbone; ``None`` builds the bare backbone.
    in_shape : (int, int) or None
        ``(n, m)``, the shape of the arrays the stem reads; required with ``stem``.

    Returns
    -------
    torch.nn.Module
        Maps ``(B, in_chans, s, s)`` to logits ``(B, num_classes)``, or with a stem
        ``(B, 1, n, m)`` arrays (a :class:`StemmedClassifier`).

    Raises
    ------
    ValueError
        Unknown name, fewer than 2 classes, an input smaller than the architecture's minimum,
        or weights that do not fit.
    """
    spec = get_spec(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if input_size is not None and input_size < spec.min_input_size:
        raise ValueError(
            f"{name} needs inputs of at least {spec.min_input_size} px, got {input_size}"
        )
    if spec.timm_name is None:
        model: nn.Module = SmallCNN(num_classes=num_classes, in_chans=in_chans)
    else:
        # pretrained=False: timm must never reach for the network.
        model = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans
        )
    if weights is not None:
        load_weights(model, Path(weights), spec=spec)
    if stem is None:
        return model
    if in_shape is None or input_size is None:
        raise ValueError("a stem needs the arrays' shape (in_shape) and the input size")
    if in_chans != 1:
        raise ValueError("stems read one-channel arrays (in_chans=1)")
    return StemmedClassifier(
        stem=create_stem(stem, in_shape=in_shape, size=input_size), backbone=model
    )


# What the two readers raise for a file that is not a valid state dict: a pickle, zip or
# safetensors format error, a truncated file, or (weights_only) a pickle of disallowed objects.
_READ_ERRORS = (
    pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, SafetensorError
)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ValueError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as exc:
        raise ValueError(
            f"{path}: not a readable state dict ({exc.__class__.__name__}: {exc})"
        ) from None
    # Accept a bare state dict or a checkpoint that wraps one (medveil's best.pt, Lightning, ...).
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ValueError(f"{path}: does not hold a state dict of tensors")
    # A medveil run with an input stem: its backbone is what another model can start from.
    if data and all(k.startswith(("stem.", "backbone.")) for k in data):
        data = {k.removeprefix("backbone."): v for k, v in data.items() if k.startswith("backbone.")}
    return data


def load_weights(model: nn.Module, path: Path, *, spec: ModelSpec) -> list[str]:
    """Load a local state dict into ``model`` with strict key and shape checks.

    Two differences are bridged, because they are what ImageNet weights always differ by: a
    first convolution with another number of input channels is adapted as timm does (RGB
    kernels summed to one channel), and a classification head of another shape is left at its
    fresh initialisation. Every other missing, unexpected or mis-shaped tensor is an error.

    Returns
    -------
    list of str
        Names of the head tensors that were left freshly initialised.

    Raises
    ------
    ValueError
        The file is unreadable or does not fit the architecture; the message lists the
        offending tensor names.
    """
    state = dict(_read_state_dict(path))
    own = model.state_dict()
    conv_key = f"{spec.first_conv}.weight"
    if conv_key in state and conv_key in own and state[conv_key].shape[1] != own[conv_key].shape[1]:
        state[conv_key] = adapt_input_conv(own[conv_key].shape[1], state[conv_key])
    skipped = [
        k for k in own
        if k.startswith(spec.classifier + ".") and k in state and state[k].shape != own[k].shape
    ]
    for k in skipped:
        state[k] = own[k]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    problems = [
        f"{what}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
        for what, names in (
            ("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)
        )
        if names
    ]
    if problems:
        raise ValueError(
            f"{path}: weights do not fit {spec.name} ({'; '.join(problems)}); expected a state "
            f"dict of timm's '{spec.timm_name or 'SmallCNN'}' architecture"
        )
    model.load_state_dict(state, strict=True)
    return skipped
