"""torchcls: fast, reproducible image-classification training with PyTorch."""

__version__ = "0.3.0"
