"""SUES-200 (Zhu et al. 2023), as downloaded or after the official split, one altitude or several.

Protocol: MEAN's (gallery places no query shows are ignored); one altitude per model is the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mean_geo.data import layouts
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.data.sues200_raw import sues200_readers
from mean_geo.datamodules.base import CrossViewDataModule
from mean_geo.datamodules.registry import register_datamodule


@register_datamodule("sues200")
class SUES200DataModule(CrossViewDataModule):
    """SUES-200 as downloaded or after the official split, one altitude or several.

    ``root`` may be either layout, or the folder above the download; one altitude per model is the
    paper's protocol.

    Args:
        root: the dataset's folder.
        altitude: 150, 200, 250 or 300 (metres), several of them, or ``"all"``.
        **kwargs: as :class:`CrossViewDataModule`.
    """

    layout = "sues200"

    def __init__(self, root: str | Path, altitude: int | str | Sequence[int] = 150, **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.altitudes = layouts.parse_altitudes(altitude)

    def world_spec_kwargs(self) -> dict:
        """A synthetic world in this layout has SUES-200's four altitudes."""
        return {"altitudes": layouts.SUES200_ALTITUDES}

    def read_train(self) -> TrainSplit:
        """The 120 training places (the official split), at the chosen altitudes."""
        folder, read_train, _ = sues200_readers(self.root)
        return read_train(folder, self.altitudes)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """One folder of the 80 test places, at the chosen altitudes."""
        root, _, read_test = sues200_readers(self.root)
        return read_test(root, folder, self.altitudes)
