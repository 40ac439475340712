"""DenseUAV (Dai et al. 2023) as it unpacks (:mod:`mean_geo.data.denseuav`).

Protocol: the whole gallery is ranked (training places included), and DenseUAV's own SDM@K and
MA@Tm beside the metres metrics, from its GPS file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mean_geo.data import denseuav
from mean_geo.data.layouts import ImageRecord, TrainSplit
from mean_geo.datamodules.base import CrossViewDataModule
from mean_geo.datamodules.registry import register_datamodule
from mean_geo.retrieval.options import DatasetProtocol


@register_datamodule("denseuav")
class DenseUAVDataModule(CrossViewDataModule):
    """DenseUAV as it unpacks (:mod:`mean_geo.data.denseuav`).

    3,033 dense places, drone photos at 80/90/100 m, six satellite tiles a place, a GPS line a
    place; galleries hold every place.
    Its protocol keeps the gallery whole (``drop_unmatched_gallery``, unless ``eval.`` says otherwise) and
    adds its own SDM@K (degrees) and MA@Tm to the metres metrics, from the GPS file.

    Args:
        root: the DenseUAV folder (``train/``, ``test/``, ``Dense_GPS_ALL.txt``).
        heights: the drone heights used (80, 90, 100, several, or ``"all"``).
        **kwargs: as :class:`CrossViewDataModule`.
    """

    layout = "denseuav"
    # its test ranks the whole gallery, training places included; SDM@K and MA@Tm beside the metres
    protocol = DatasetProtocol(drop_unmatched_gallery=False, position_metrics="denseuav")

    def __init__(self, root: str | Path, heights: int | str | Sequence[int] = "all", **kwargs) -> None:
        super().__init__(root, **kwargs)
        self.heights = denseuav.parse_heights(heights)
        self.altitudes = self.heights  # what results and the fingerprint call the chosen heights

    def world_spec_kwargs(self) -> dict:
        """A synthetic world in this layout has DenseUAV's three heights."""
        return {"altitudes": denseuav.HEIGHTS}

    def read_train(self) -> TrainSplit:
        """``<root>/train/{drone,satellite}/<place>/`` at the chosen heights."""
        return denseuav.read_train(self.root, self.heights)

    def read_eval(self, folder: str) -> list[ImageRecord]:
        """``<root>/test/<folder>/<place>/`` (drone folders at the chosen heights)."""
        return denseuav.read_test(self.root, folder, self.heights)

    def training_pairs(self) -> list[tuple[Path, Path, int]]:
        """Each drone photo with the tile cut for its height."""
        return denseuav.train_pairs(self.train_split)

    def coordinate_table(self) -> tuple[str, dict]:
        """The places' positions from the GPS file (``dataset.coordinates_csv`` overrides it)."""
        if self.coordinates_csv:
            return super().coordinate_table()
        return "place", {p: (g.lat, g.lon) for p, g in denseuav.read_place_gps(self.root).items()}
