"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from .crowd import crowd_ad_resnet_m, crowd_ad_resnet_s
from .registry import create_model, list_models, register_model
from .toy import toy_detector  # importing a builder module registers its models

__all__ = ["create_model", "crowd_ad_resnet_m", "crowd_ad_resnet_s", "list_models", "register_model", "toy_detector"]
