"""Every torchvision classification model, registered as `tv_<name>` (ImageNet-sized input).

The names come from `torchvision.models.list_models(module=torchvision.models)`, which
lists the models of the top-level `torchvision.models` module only: the classification
models, not those of `detection`, `segmentation`, `video`, `optical_flow` or
`quantization`. Registering them builds nothing; a model is built when it is created:

    create_model("tv_efficientnet_b0", num_classes=100)
    create_model("tv_resnet50", num_classes=10, pretrained=True)

Extra keyword arguments go to the torchvision builder (e.g. `dropout=0.3`).

`pretrained=True` never downloads: the file of the model's default weights must already
be in the torch hub cache, `torch.hub.get_dir()/checkpoints` (e.g. put there by an earlier
`torchvision.models.resnet50(weights="DEFAULT")` on a machine with internet access);
otherwise it is a ValueError naming the file that was looked for. With a number of
classes other than the weights' 1000, the weights are loaded and then the final classifier
layer(s) - those with 1000 outputs, auxiliary heads included - are replaced by freshly
initialised ones with `num_classes` outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision

from torchcls.models.registry import register_model

PREFIX = "tv_"
IMAGENET_CLASSES = 1000


def torchvision_classification_models() -> list[str]:
    """Names of torchvision's classification models (without the tv_ prefix)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def default_weights_file(name: str) -> str:
    """Where the default weights of torchvision model `name` sit in the local torch hub cache."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def replace_classifier(model: nn.Module, num_classes: int, old_classes: int = IMAGENET_CLASSES) -> list[str]:
    """Swap every Linear (or 1x1-conv head, as in SqueezeNet) with `old_classes` outputs for
    a new one with `num_classes` outputs. Returns the names of the replaced modules."""
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.out_features == old_classes:
            new: nn.Module = nn.Linear(module.in_features, num_classes, bias=module.bias is not None)
        elif isinstance(module, nn.Conv2d) and module.out_channels == old_classes:
            new = nn.Conv2d(
                module.in_channels,
                num_classes,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
        else:
            continue
        new = new.to(device=module.weight.device, dtype=module.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        replaced.append(name)
    if not replaced:
        raise ValueError(f"found no classifier layer with {old_classes} outputs to replace")
    return replaced


def build(name: str, num_classes: int = IMAGENET_CLASSES, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build torchvision model `name`; with pretrained=True from the locally cached default weights."""
    if not pretrained:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    path = default_weights_file(name)
    if not os.path.isfile(path):
        raise ValueError(
            f"tv_{name}: pretrained weights are not in the local torch hub cache "
            f"(looked for {path}); no download is attempted. Put the file there "
            f"(or point TORCH_HOME at a cache holding it), or use pretrained=False."
        )
    weights = torchvision.models.get_model_weights(name).DEFAULT
    model = torchvision.models.get_model(name, weights=weights, **kwargs)
    if num_classes != len(weights.meta["categories"]):
        replace_classifier(model, num_classes, old_classes=len(weights.meta["categories"]))
    return model


def _make_builder(name: str) -> Callable[..., nn.Module]:
    def builder(num_classes: int = IMAGENET_CLASSES, pretrained: bool = False, **kwargs) -> nn.Module:
        return build(name, num_classes=num_classes, pretrained=pretrained, **kwargs)

    builder.__name__ = builder.__qualname__ = PREFIX + name
    builder.__doc__ = (
        f"torchvision's `{name}` (weights=None unless pretrained=True, which uses "
        f"the default weights from the local torch hub cache)."
    )
    return builder


for _name in torchvision_classification_models():
    register_model(family="torchvision", dataset="imagenet", name=PREFIX + _name)(_make_builder(_name))
del _name
