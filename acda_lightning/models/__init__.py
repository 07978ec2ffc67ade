"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``."""

from .registry import create_model, list_models, register_model
from .denoise import denoise_net, denoise_sigma_net  # importing a builder module registers its models
from .restoration import RestorationNet, sr_net
from .toy import toy_detector

__all__ = [
    "RestorationNet",
    "create_model",
    "denoise_net",
    "denoise_sigma_net",
    "list_models",
    "register_model",
    "sr_net",
    "toy_detector",
]
