"""The dtype rules the custom-op entry points share: what they return, and autocast kept off their op."""

from __future__ import annotations

import contextlib

import torch


def result_dtype(x: torch.Tensor, alpha: torch.Tensor) -> torch.dtype:
    """The dtype a layer's output has: autocast's where it is on, else the inputs' promoted dtype."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, alpha.dtype)


def autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off around a custom op, which casts its operands itself."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
