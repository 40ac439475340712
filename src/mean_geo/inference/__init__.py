"""Loading trained models, embedding photos and localizing them, without Lightning or Hydra."""
