"""The benchmark suite (``make bench`` = ``python -m mean_geo.bench``)."""
