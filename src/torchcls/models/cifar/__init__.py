"""CIFAR-sized (32x32 input) models, one file per family. Importing registers them."""

from torchcls.models.cifar import (  # noqa: F401
    alexnet,
    densenet,
    mobilenet,
    mobilenetv2,
    pnasnet,
    preresnet,
    resnet,
    resnext,
    shufflenetv2,
    speednet,
    vgg,
    wrn,
)
