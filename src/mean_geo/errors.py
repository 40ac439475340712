"""Project exceptions: user mistakes that the entry points print as one line (no traceback)."""


class MeanGeoError(Exception):
    """Base class: something the user can fix (a path, a config key, a checkpoint)."""


class DatasetLayoutError(MeanGeoError):
    """The files on disk do not match the dataset layout that was asked for."""


class ConfigError(MeanGeoError):
    """A configuration value is missing or out of range."""


class CheckpointError(MeanGeoError):
    """A checkpoint is missing, unreadable, or from another model."""


class SpecError(MeanGeoError):
    """A build spec names something unknown or holds a value of the wrong kind.

    A spec is what a config, checkpoint, export or index says to build.  Not a
    :class:`CheckpointError`: a typo on the command line (``model.architecture=maen``) is one too.
    """


def whole_number(key: str, value: object, least: int) -> int:
    """``value`` if it is an int >= ``least`` (not a bool); else the one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key}={value!r}: expected a whole number >= {least}")
    return value


class NonFiniteError(MeanGeoError):
    """Numbers that must be finite are NaN or infinite (a diverged model, a damaged file)."""


def require_finite(values, what: str, hint: str) -> None:
    """Refuse ``values`` (a tensor) holding NaN or inf, with one line.

    One guard for embeddings wherever they are ranked or stored.

    Args:
        values: the tensor; its first dimension counts the rows.
        what: what the rows are, for the message.
        hint: what to do about it, for the message.

    Raises:
        NonFiniteError: how many of ``what`` rows are not finite, and ``hint``.
    """
    import torch  # errors.py stays importable without torch for the plain-data checks

    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        rows = int(bad.reshape(len(values), -1).any(dim=1).sum()) if values.ndim else 1
        total = len(values) if values.ndim else 1
        raise NonFiniteError(f"{what}: {rows} of {total} are not finite (NaN or inf); {hint}")


class TrainingDiverged(MeanGeoError):
    """The training loss became NaN or infinite."""
