"""Lightning datamodules: the shared base (loaders, batch finishing) and one file per dataset.

Importing this package registers the built-in layouts (``dataset.name``): university1652, sues200,
denseuav, gta_uav.  A plugin registers its own with :func:`register_datamodule`.
"""

from mean_geo.datamodules.base import CrossViewDataModule
from mean_geo.datamodules.denseuav import DenseUAVDataModule
from mean_geo.datamodules.gta_uav import GTAUAVDataModule
from mean_geo.datamodules.registry import DATAMODULES, register_datamodule
from mean_geo.datamodules.sues200 import SUES200DataModule
from mean_geo.datamodules.university1652 import University1652DataModule

__all__ = [
    "DATAMODULES",
    "CrossViewDataModule",
    "DenseUAVDataModule",
    "GTAUAVDataModule",
    "SUES200DataModule",
    "University1652DataModule",
    "register_datamodule",
]
