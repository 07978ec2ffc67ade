"""acda-lightning: Adaptive Convolutions with Per-pixel Dynamic Filter Atom (ICCV 2021) in PyTorch Lightning."""

__version__ = "0.1.0"
