"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from .registry import create_model, list_models, register_model
from .restoration import RestorationNet, sr_net
from .toy import toy_detector  # importing a builder module registers its models

__all__ = ["RestorationNet", "create_model", "list_models", "register_model", "sr_net", "toy_detector"]
