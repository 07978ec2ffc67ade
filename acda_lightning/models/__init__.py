"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from . import toy  # noqa: F401  (registers its builders)
from .registry import create_model, list_models, register_model
from .toy import toy_detector

__all__ = ["create_model", "list_models", "register_model", "toy_detector"]
