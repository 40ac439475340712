"""Writing the synthetic cross-view world: places, their rendered views, the real datasets' layouts."""
