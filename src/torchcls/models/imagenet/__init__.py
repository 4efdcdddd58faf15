"""ImageNet-sized (224x224 input) models. Importing registers them."""

from torchcls.models.imagenet import resnext, torchvision_models, xresnet  # noqa: F401
