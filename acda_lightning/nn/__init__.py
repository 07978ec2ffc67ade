"""Building blocks: the ACDA layer, its bases, the reference formula and model conversion."""

from .acda import ACDAConv2d
from .bases import fourier_bessel_bases, multiscale_fourier_bessel_bases
from .convert import to_acda
from .reference import acda_reference

__all__ = [
    "ACDAConv2d",
    "acda_reference",
    "fourier_bessel_bases",
    "multiscale_fourier_bessel_bases",
    "to_acda",
]
