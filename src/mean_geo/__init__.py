"""mean_geo: MEAN for cross-view (drone <-> satellite) geo-localization."""

__version__ = "0.1.0"
