"""Model zoo: `create_model(name, num_classes, **kwargs)`, `list_models()`."""

from torchcls.models.registry import create_model, get_entry, input_channels, list_models, register_model

__all__ = ["create_model", "get_entry", "input_channels", "list_models", "register_model"]
