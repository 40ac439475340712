"""Checkpoints that are complete or absent: written next to their final name, then renamed.

Lightning's local save goes through an fsspec transaction whose temporary file may live on another
filesystem and is copied into place, so a full disk can leave a truncated checkpoint under its
final name.  Here the bytes go to ``.<name>.partial-<pid>`` in the destination folder, are synced,
and replace the final name in one rename; on any error the partial file is removed and the error
is one line.  Remote paths (``s3://`` …) keep Lightning's own writer.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mean_geo.errors import CheckpointError
from mean_geo.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_path(path) as partial, partial.open("wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            reason = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            raise CheckpointError(
                f"{path}: checkpoint not saved ({reason}); nothing was written under that name"
            ) from None
