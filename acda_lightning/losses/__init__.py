"""Training objectives that are more than one library call."""

from .vdnet import VDNetLoss, sigma_prior_map, vdnet_terms

__all__ = ["VDNetLoss", "sigma_prior_map", "vdnet_terms"]
