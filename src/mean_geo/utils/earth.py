"""The Earth's mean radius (IUGG), for distances on the sphere: one constant every layer shares
without importing torch (the tiler and the geometry of a tile need no tensor library)."""

EARTH_RADIUS_M = 6_371_008.8
