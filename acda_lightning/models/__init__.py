"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from .registry import create_model, list_models, register_model
from .toy import toy_detector  # importing a builder module registers its models
from .lenet import lenet
from .ad_resnet import ad_resnet_l, ad_resnet_m, ad_resnet_s, ad_resnet_trunk
from .crowd import crowd_ad_resnet_m, crowd_ad_resnet_s

__all__ = [
    "ad_resnet_l",
    "ad_resnet_m",
    "ad_resnet_s",
    "ad_resnet_trunk",
    "create_model",
    "crowd_ad_resnet_m",
    "crowd_ad_resnet_s",
    "lenet",
    "list_models",
    "register_model",
    "toy_detector",
]
