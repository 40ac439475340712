"""The benchmark cases of ``python -m mean_geo.bench``: each runs in its own process."""
