"""ImageNet-sized (224x224 input) models. Importing registers torchcls's own; torchvision's (`tv_*`,
torchvision_models.py) are registered when a name is not found among them or the whole list is asked
for (registry._ensure_loaded), since importing torchvision takes seconds."""

from torchcls.models.imagenet import resnext, xresnet  # noqa: F401
