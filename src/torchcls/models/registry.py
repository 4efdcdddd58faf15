"""The model registry: every architecture is a registered entry point with its metadata.

@register_model(family="resnet", dataset="cifar")
def resnet20(num_classes=10, **kw): ...

create_model("resnet20", num_classes=100)
create_model("resnet18")  # an ImageNet-sized model: 1,000 classes unless told otherwise
list_models(dataset="cifar")
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

# input size by data set kind: the size the model is built for and FLOPs are counted at
INPUT_SIZES = {"cifar": 32, "imagenet": 224}
# the class count a model gets when none is asked for, by data set kind (as torchvision and timm do)
DEFAULT_NUM_CLASSES = {"cifar": 10, "imagenet": 1000}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    family: str
    dataset: str  # "cifar" (32x32) or "imagenet" (224x224)
    # a family builder (e.g. "resnet") takes depth & co. from the original's flags;
    # a fixed entry (e.g. "resnet20") is one row of the results table.
    is_family: bool = False
    aliases: tuple = field(default_factory=tuple)

    @property
    def input_size(self) -> int:
        return INPUT_SIZES[self.dataset]

    @property
    def num_classes(self) -> int:
        """The default class count: 1000 for ImageNet-sized models, 10 for CIFAR-sized ones."""
        return DEFAULT_NUM_CLASSES[self.dataset]

    def accepted_kwargs(self) -> set[str] | None:
        """Keyword names the builder accepts, or None when it takes **kwargs."""
        params = inspect.signature(self.fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return {n for n in params if n != "num_classes"}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    family: str, dataset: str = "cifar", name: str | None = None, is_family: bool = False, aliases: tuple = ()
):
    """Decorator registering a builder `fn(num_classes=..., **kwargs) -> nn.Module`."""
    if dataset not in INPUT_SIZES:
        raise ValueError(f"dataset must be one of {sorted(INPUT_SIZES)}, got {dataset!r}")

    def deco(fn):
        entry = ModelEntry(name or fn.__name__, fn, family, dataset, is_family, tuple(aliases))
        for key in (entry.name, *entry.aliases):
            if key in _REGISTRY:
                raise ValueError(f"model {key!r} is registered twice")
            _REGISTRY[key] = entry
        return fn

    return deco


def _ensure_loaded(torchvision: bool = True) -> None:
    # importing the families registers them; lazy: they import this module (a cycle). torchvision's
    # models (tv_*) only when asked for: importing torchvision takes seconds, which a run of one of
    # torchcls's own models should not pay
    from torchcls.models import cifar, imagenet  # noqa: F401, PLC0415

    if torchvision:
        from torchcls.models.imagenet import torchvision_models  # noqa: F401, PLC0415


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded(torchvision=False)
    if name not in _REGISTRY:
        _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Run `torchcls models` for the full list.") from None


def input_channels(model: nn.Module) -> int:
    """The channel count a model takes: its `input_channels` attribute (models built for the data
    set's own channels, e.g. 1 for Fashion-MNIST), else 3 (grayscale is repeated to RGB for it)."""
    return int(getattr(model, "input_channels", 3))


def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model with `num_classes` outputs (None: the entry's default, 1000 for an
    ImageNet-sized model, 10 for a CIFAR-sized one). `in_channels`: the data's channel count, passed
    on to builders that take it (the others take RGB; `input_channels(model)` says which). Keyword
    arguments the builder does not take are an error."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    entry = get_entry(name)
    if num_classes is None:
        num_classes = entry.num_classes
    accepted = entry.accepted_kwargs()
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"model {name!r} does not take {', '.join(unknown)}; "
                f"it takes: {', '.join(sorted(accepted)) or 'no options'}"
            )
    if in_channels is not None and accepted is not None and "in_channels" in accepted:
        kwargs["in_channels"] = in_channels
    return entry.fn(num_classes=num_classes, **kwargs)


def list_models(dataset: str | None = None, include_families: bool = False, include_aliases: bool = False) -> list[str]:
    """Registered names, sorted; optionally only those of one data set kind ('cifar'/'imagenet')."""
    _ensure_loaded()
    names = []
    for key, e in _REGISTRY.items():
        if dataset is not None and e.dataset != dataset:
            continue
        if e.is_family and not include_families:
            continue
        if key != e.name and not include_aliases:
            continue
        names.append(key)
    return sorted(names)


def nearest_valid(depth: int, valid: Callable[[int], bool], limit: int = 2000) -> tuple[int | None, int | None]:
    """The closest valid depths below and above `depth` for a depth rule."""
    below = next((d for d in range(depth - 1, 0, -1) if valid(d)), None)
    above = next((d for d in range(depth + 1, depth + limit) if valid(d)), None)
    return below, above


def check_depth(family: str, depth: int, rule: str, valid: Callable[[int], bool]) -> None:
    """Raise a ValueError naming the rule and the nearest valid depths when `depth` breaks it."""
    if isinstance(depth, int) and depth > 0 and valid(depth):
        return
    below, above = nearest_valid(depth if isinstance(depth, int) and depth > 0 else 1, valid)
    near = " or ".join(str(d) for d in (below, above) if d is not None)
    raise ValueError(f"{family}: depth {depth} is not valid; the depth must be {rule} (nearest valid: {near})")
