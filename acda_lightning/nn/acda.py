"""ACDAConv2d: convolution with per-pixel dynamic filter atoms over multi-scale Fourier-Bessel bases."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .bases import default_scales, multiscale_fourier_bessel_bases
from .kernels import IMPLEMENTATIONS, resolve_impl

GENERATORS = ("paper", "release")


def _square(name: str, value) -> int:
    """An int, or a pair of equal ints (as nn.Conv2d stores them): ACDA windows are square."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} must be an int or a pair of equal ints, got {value!r}")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int, dilation: int) -> int:
    """The spatial output size of nn.Conv2d with these arguments."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


class ACDAConv2d(nn.Module):
    """Adaptive convolution with per-pixel dynamic filter atoms (Wang et al., ICCV 2021).

    At every output position a small generator predicts basis coefficients alpha
    (num_atoms x K); the atoms are D = alpha @ bases, and the filter applied there is
    K[o, c] = sum_a A[o, c, a] D[a] with A shared over positions. ``generator`` picks the
    atom generator: ``"paper"`` is Appendix A.3 (1x1 conv to ``gen_hidden``, BatchNorm,
    ReLU, 3x3 conv to num_atoms*K, its weights zero-initialised); ``"release"`` is the
    authors' released layer (3x3 conv to max(gen_hidden, num_atoms*K/2), BatchNorm, Tanh,
    3x3 conv, BatchNorm, Tanh, so alpha lies in (-1, 1); A Kaiming-normal fan_out, bias zero).

    ``groups`` has ``nn.Conv2d``'s geometry: output channel o sees only the C/groups input
    channels of its group, A is (O, C/groups, m), and the per-pixel atoms (predicted from all
    input channels) are shared by every group. Depthwise (groups = C = O) is
    y_c = sum_a A[c, a] (D_a * x_c), a per-pixel adaptive depthwise filter from m atoms.
    Every implementation computes grouped layers; on CUDA "auto" keeps them on
    "basis" until the grouped Triton path is timed on a GPU (``kernels.cuda_impl``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        bias: bool = True,
        num_atoms: int = 6,
        bases: str | None = "fourier_bessel",
        bases_per_scale: int = 6,
        scales: Sequence[int] | None = None,
        gen_hidden: int = 64,
        impl: str = "auto",
        generator: str = "paper",
        groups: int = 1,
    ) -> None:
        super().__init__()
        kernel_size = _square("kernel_size", kernel_size)
        stride = _square("stride", stride)
        dilation = _square("dilation", dilation)
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("stride", stride),
            ("dilation", dilation),
            ("num_atoms", num_atoms),
            ("gen_hidden", gen_hidden),
            ("groups", groups),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"{name} must be divisible by groups, got {name}={value} and groups={groups}")
        padding = dilation * (kernel_size - 1) // 2 if padding is None else _square("padding", padding)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if impl != "auto" and impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be 'auto' or one of {sorted(IMPLEMENTATIONS)}, got {impl!r}")
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {generator!r}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.num_atoms = num_atoms
        self.impl = impl
        self.generator = generator

        if bases == "fourier_bessel":
            self.scales = default_scales(kernel_size) if scales is None else tuple(sorted(scales))
            basis_tensor = multiscale_fourier_bessel_bases(kernel_size, bases_per_scale, self.scales)
        elif bases is None:
            self.scales = ()
            basis_tensor = None
        else:
            raise ValueError(f"bases must be 'fourier_bessel' or None, got {bases!r}")
        self.register_buffer("bases", basis_tensor)
        self.num_bases = kernel_size * kernel_size if basis_tensor is None else basis_tensor.shape[0]

        predicted = num_atoms * self.num_bases
        if generator == "paper":
            self.gen_kernel = 1
            # at stride 1: basis_coefficients samples x at the window centres first (a strided 1x1 through
            # oneDNN took 1.4-1.8x as long, docs/decisions.md)
            self.atom_generator = nn.Sequential(
                nn.Conv2d(in_channels, gen_hidden, 1),
                nn.BatchNorm2d(gen_hidden),
                nn.ReLU(inplace=True),
                nn.Conv2d(gen_hidden, predicted, 3, padding=1),
            )
        else:
            hidden = max(gen_hidden, predicted // 2)
            self.gen_kernel = 3
            self.atom_generator = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, stride=stride),
                nn.BatchNorm2d(hidden),
                nn.Tanh(),
                nn.Conv2d(hidden, predicted, 3, padding=1),
                nn.BatchNorm2d(predicted),
                nn.Tanh(),
            )
        self.coefficients = nn.Parameter(torch.empty(out_channels, in_channels // groups, num_atoms))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.in_channels // self.groups * self.num_atoms
        if self.generator == "release":
            nn.init.kaiming_normal_(self.coefficients.view(self.out_channels, fan_in, 1, 1), mode="fan_out")
            if self.bias is not None:
                nn.init.zeros_(self.bias)
        else:
            # A and bias: nn.Conv2d's default for the equivalent 1x1 conv over in*m channels.
            nn.init.kaiming_uniform_(self.coefficients.view(self.out_channels, fan_in, 1, 1), a=math.sqrt(5))
            if self.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)
            # The generator's last weights start at zero (as deformable conv's offset predictor does):
            # alpha starts at the conv bias, so the layer starts as a static convolution and learns its
            # per-pixel adaptation from there. Measured on the toy study: 2x faster early progress than
            # a random start, which first has to unlearn a random per-pixel filter.
            nn.init.zeros_(self.atom_generator[-1].weight)
            # That bias sets the scale. nn.Conv2d's default bias init (|alpha| < 0.04) left the atoms
            # tiny: output std 0.02-0.05x the replaced conv's on a converted resnet18. Random atoms of
            # unit Frobenius norm make the filter variance sum_a Var(A) |D_a|^2 = C*k*k Var(W) of the
            # nn.Conv2d it replaces (both 1/3 summed over a filter), so the output std matches
            # (docs/decisions.md, "Default generator").
            with torch.no_grad():
                directions = torch.randn_like(self.atom_generator[-1].bias).view(self.num_atoms, self.num_bases)
                self.atom_generator[-1].bias.copy_(self.unit_norm_atoms(directions).flatten())

    def unit_norm_atoms(self, alpha: torch.Tensor) -> torch.Tensor:
        """alpha (m, K) rescaled per atom so that each atom D_a = alpha_a . bases has unit Frobenius norm."""
        if self.bases is None:
            norms = alpha.norm(dim=1, keepdim=True)
        else:
            bases = self.bases.flatten(1).to(alpha)
            norms = (alpha @ bases).norm(dim=1, keepdim=True)
        return alpha / norms

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        args = (self.kernel_size, self.stride, self.padding, self.dilation)
        return conv_output_size(height, *args), conv_output_size(width, *args)

    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ACDAConv2d expected input of shape (batch, {self.in_channels}, height, width), "
                f"got {tuple(x.shape)}"
            )
        out_h, out_w = self.output_size(*x.shape[-2:])
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"input of size {tuple(x.shape[-2:])} is too small for kernel_size={self.kernel_size}, "
                f"padding={self.padding}, dilation={self.dilation}"
            )
        return out_h, out_w

    def basis_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """alpha: (B, num_atoms, K, H_out, W_out), predicted at the centre of each output window."""
        out_h, out_w = self._check_input(x)
        # Output (i, j) convolves the window centred at input i*stride - padding + dilation*(k-1)//2;
        # crop or zero-pad x so the generator's strided conv is centred on exactly those pixels.
        start = self.dilation * (self.kernel_size - 1) // 2 - self.padding - self.gen_kernel // 2
        span_h = (out_h - 1) * self.stride + self.gen_kernel
        span_w = (out_w - 1) * self.stride + self.gen_kernel
        height, width = x.shape[-2:]
        shifts = (-start, start + span_w - width, -start, start + span_h - height)
        # negative amounts crop (a view where nothing is padded); traced for export, the amounts are symbolic
        if torch.jit.is_tracing() or any(shift > 0 for shift in shifts):
            x = F.pad(x, shifts)
        elif any(shifts):
            x = x[:, :, start : start + span_h, start : start + span_w]
        # The paper generator's 1x1 runs at stride 1 on the window centres (in a layer pickled whole before
        # 2026-12-02 (night) the 1x1 itself has the stride).
        if self.generator == "paper" and self.stride > 1 and self.atom_generator[0].stride == (1, 1):
            x = x[:, :, :: self.stride, :: self.stride]
        alpha = self.atom_generator(x)
        return alpha.reshape(x.shape[0], self.num_atoms, self.num_bases, out_h, out_w)

    def dynamic_atoms(self, x: torch.Tensor) -> torch.Tensor:
        """D: (B, num_atoms, k, k, H_out, W_out), the per-pixel filter atoms."""
        alpha = self.basis_coefficients(x)
        k = self.kernel_size
        if self.bases is None:
            return alpha.reshape(alpha.shape[0], self.num_atoms, k, k, *alpha.shape[-2:])
        return torch.einsum("bmkhw,kuv->bmuvhw", alpha, self.bases.to(alpha.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.basis_coefficients(x)
        out_pixels = alpha.shape[-1] * alpha.shape[-2]
        implementation = IMPLEMENTATIONS[resolve_impl(self.impl, x, self.kernel_size, out_pixels,
                                                      stride=self.stride, dilation=self.dilation, groups=self.groups)]
        return implementation(
            x,
            alpha,
            self.bases,
            self.coefficients,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.kernel_size,
            groups=self.groups,
        )

    def extra_repr(self) -> str:
        bases = f"fourier_bessel, scales={self.scales}" if self.bases is not None else "None"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, num_atoms={self.num_atoms}, bases={bases}, "
            f"generator={self.generator}, impl={self.impl}"
        )
