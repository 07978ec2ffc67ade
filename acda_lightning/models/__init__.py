"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from .registry import create_model, list_models, model_builder, register_model
from .ad_resnet import ad_resnet_l, ad_resnet_m, ad_resnet_s, ad_resnet_trunk  # importing a builder module registers its models
from .crowd import crowd_ad_resnet_m, crowd_ad_resnet_s
from .denoise import denoise_net, denoise_sigma_net
from .lenet import lenet
from .restoration import RestorationNet, sr_net
from .toy import toy_detector

__all__ = [
    "RestorationNet",
    "ad_resnet_l",
    "ad_resnet_m",
    "ad_resnet_s",
    "ad_resnet_trunk",
    "create_model",
    "crowd_ad_resnet_m",
    "crowd_ad_resnet_s",
    "denoise_net",
    "denoise_sigma_net",
    "lenet",
    "list_models",
    "model_builder",
    "register_model",
    "sr_net",
    "toy_detector",
]
