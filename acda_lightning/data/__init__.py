"""Datasets in their official on-disk formats, and the LightningDataModules that wrap them.

One module per dataset family; configs and code name a class as ``acda_lightning.data.<Class>``,
found in whichever module of this package defines it (a new dataset family is a new file).
"""

from ..utils.plugins import package_getattr

__getattr__ = package_getattr(__name__)
