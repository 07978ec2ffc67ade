"""Networks of the paper, built by registered functions: ``create_model("toy_detector", conv="acda")``.

A builder is also an attribute of this package (``acda_lightning.models.lenet``), found in whichever
module defines it: a new network family is a new file, with no import list to edit here.
"""

from ..utils.plugins import package_getattr
from .lenet import lenet  # module and builder share a name: bind the builder, not the module
from .registry import MODELS, create_model, list_models, model_builder, register_model

__getattr__ = package_getattr(__name__)
__all__ = ["MODELS", "create_model", "lenet", "list_models", "model_builder", "register_model"]
