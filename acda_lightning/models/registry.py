"""timm-style model registry: builder functions registered by name, found by pattern.

Each builder module registers its own functions with ``@register_model``; the registry imports every
module of ``acda_lightning.models`` on first lookup, so a new network family is a new file.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from ..utils.plugins import Registry

MODELS = Registry("acda_lightning.models", "model")
register_model = MODELS.register()


def list_models(pattern: str = "*") -> list[str]:
    return [name for name in MODELS.names() if fnmatch.fnmatch(name, pattern)]


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The function registered as ``name`` (its signature says which arguments the model takes)."""
    return MODELS.get(name)


def create_model(name: str, **kwargs) -> nn.Module:
    return model_builder(name)(**kwargs)
