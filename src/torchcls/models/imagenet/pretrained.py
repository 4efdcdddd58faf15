"""`--pretrained` for torchcls's own ImageNet ResNet/ResNeXt: torchvision's weights, from the local cache.

Our ImageNet ResNet/ResNeXt use torchvision's module names, so torchvision's state_dict loads
unchanged. The file must already be in the torch hub cache (`torch.hub.get_dir()/checkpoints`);
nothing is downloaded. With another class count the final `fc` is re-initialised.
(`tv_*` models take `pretrained=True` themselves, see torchvision_models.py.)
"""

from __future__ import annotations

import os

import torch.nn as nn

from torchcls.errors import UserError
from torchcls.models.weights import load_model_weights, safe_torch_load

FIXED = {
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
}


def torchvision_name(arch: str, model_kwargs: dict) -> str | None:
    """The torchvision model whose weights fit -a `arch` with these flags, or None."""
    if arch in FIXED:
        return arch
    if arch in ("resnext50", "resnext101"):
        name = f"{arch}_{model_kwargs.get('cardinality', 32)}x{model_kwargs.get('base_width', 4)}d"
        return name if name in FIXED else None
    return None


def pretrained_file(arch: str, model_kwargs: dict) -> str:
    """The cached torchvision weights file for -a `arch`; UserError when unknown or absent."""
    from torchcls.models.imagenet.torchvision_models import (  # noqa: PLC0415 (imports torchvision)
        PREFIX,
        default_weights_file,
    )

    name = arch[len(PREFIX) :] if arch.startswith(PREFIX) else torchvision_name(arch, model_kwargs)
    if name is None:
        raise UserError(
            f"--pretrained: no ImageNet weights are known for -a {arch} with these flags; "
            f"use an ImageNet ResNet/ResNeXt (resnet18 ... resnext101_64x4d) or a tv_* model"
        )
    try:
        path = default_weights_file(name)
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"--pretrained: torchvision has no default weights for {name}") from None
    if not os.path.isfile(path):
        raise UserError(
            f"--pretrained: torchvision's {name} weights are not in the local torch hub cache "
            f"(looked for {path}); nothing is downloaded. Put the file there (or set TORCH_HOME), "
            f"or drop --pretrained"
        )
    return path


def load_pretrained(model: nn.Module, arch: str, model_kwargs: dict, num_classes: int) -> str:
    """Load torchvision's default ImageNet weights into `model`; returns the file used."""
    path = pretrained_file(arch, model_kwargs)
    state = safe_torch_load(path, what="--pretrained: torchvision's weights file")
    if not isinstance(state, dict):
        raise UserError(
            f"--pretrained: {path} holds a {type(state).__name__}, not a state_dict; replace it with torchvision's file"
        )
    fc = state.get("fc.weight")
    if fc is not None and num_classes != fc.shape[0]:  # without an fc, load_model_weights names the misfit
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
    load_model_weights(model, state, path)
    return path
