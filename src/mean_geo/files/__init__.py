"""What files hold and how they are read and written: atomic writes, specs, checkpoints."""
