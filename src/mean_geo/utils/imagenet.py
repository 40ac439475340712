"""ImageNet's per-channel input statistics (RGB in [0, 1]): what ConvNeXt's weights and the
authors' code normalise with, and the default wherever a backbone names no statistics of its own."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
