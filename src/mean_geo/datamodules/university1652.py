"""University-1652 (Zheng et al. 2020): ``root/train/{drone,satellite}``, ``root/test/{query,gallery}_*``.

Protocol: MEAN's and Sample4Geo's (gallery places no query shows are ignored), metres from a
coordinates table where one is given.
"""

from __future__ import annotations

from mean_geo.data import layouts
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.datamodules.base import CrossViewDataModule
from mean_geo.datamodules.registry import register_datamodule


@register_datamodule("university1652")
class University1652DataModule(CrossViewDataModule):
    """University-1652 as it unpacks."""

    layout = "university1652"

    def read_train(self) -> TrainSplit:
        """``<root>/train/{drone,satellite}/<place>/``."""
        return layouts.u1652_train(self.root)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """``<root>/test/<folder>/<place>/``."""
        return layouts.u1652_test(self.root, folder)
