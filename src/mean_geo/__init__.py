"""mean_geo: MEAN and its paper's baselines for cross-view (drone <-> satellite) geo-localization.

The public API, importable without Lightning or Hydra::

    import mean_geo
    m = mean_geo.load_model("export_folder_or.ckpt")      # or mean_geo.from_pretrained("owner/name")
    emb = m.model(images)                                  # (B, D) L2-normalised embeddings
    metrics = mean_geo.evaluate(q, q_ids, g, g_ids)        # R@K, R@1%, AP (University-1652 protocol)

Entry points (``python -m mean_geo.<name>``): train, eval, index, localize, export, check, synth,
profile, bench.  Library code lives in sub-packages: models, losses, data, synthetic, retrieval,
files, inference, training, benchmarks, cli.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: public name -> module that defines it (imported on first use, so ``import mean_geo`` stays light)
_API = {
    "load_model": "mean_geo.inference.loading",
    "InferenceModel": "mean_geo.inference.loading",
    "embed_images": "mean_geo.inference.localization",  # (mean_geo.localize is the command)
    "read_index": "mean_geo.retrieval.index_store",
    "topk_search": "mean_geo.retrieval.search",
    "evaluate": "mean_geo.retrieval.evaluate",
    "MEAN": "mean_geo.models.mean",
    "Sample4Geo": "mean_geo.models.peers",
    "DAC": "mean_geo.models.peers",
    "CAMP": "mean_geo.models.peers",
    "register_architecture": "mean_geo.models.registry",
    "MEANLoss": "mean_geo.losses",
    "register_loss": "mean_geo.losses.registry",
    "MeanGeoError": "mean_geo.errors",
}
__all__ = [*_API, "from_pretrained", "__version__"]


def from_pretrained(name_or_folder: str, **hub_kwargs: Any):
    """An exported model from the Hugging Face Hub or a local export folder.

    Args:
        name_or_folder: ``"owner/name"`` on the Hub, or a folder written by ``mean_geo.export``.
        **hub_kwargs: passed to ``huggingface_hub`` (``revision``, ``cache_dir``, ``token``, ...).

    Returns:
        The eval-mode model (:class:`~mean_geo.inference.loading.InferenceModel`), checked as
        :func:`~mean_geo.inference.loading.load_model` checks: nothing in the files runs code.
    """
    from mean_geo.inference.loading import InferenceModel

    return InferenceModel.from_pretrained(name_or_folder, **hub_kwargs)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mean_geo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
