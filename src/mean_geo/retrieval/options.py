"""What an evaluation computes: the user's options (``cfg.eval``), checked once and frozen, and the
dataset's protocol they are resolved against — conflicts refused before any work.

:class:`EvalOptions` is built once per run from ``cfg.eval`` (:meth:`EvalOptions.from_settings`),
then resolved against the evaluated dataset's :class:`DatasetProtocol`
(:meth:`EvalOptions.for_dataset`): what the user left open (the gallery convention) takes the
protocol's value, what the protocol has no meaning for (re-ranking on GTA-UAV's positive sets) is
refused with one line.  The evaluator, the datamodule (corrupted queries), the embedding (flip-TTA)
and metrics.json all read the one resolved object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mean_geo.data.corruptions import SEVERITIES, query_conditions
from mean_geo.errors import ConfigError, whole_number
from mean_geo.retrieval.multi_query import check_mode
from mean_geo.retrieval.rerank import RerankSettings

#: how many of every query's best gallery items an evaluation keeps (predictions, the browser)
RANKING_K = 5


@dataclass(frozen=True)
class DatasetProtocol:
    """How a dataset is evaluated, as its papers do; one per datamodule class.

    Attributes:
        drop_unmatched_gallery: the gallery convention where ``eval.drop_unmatched_gallery`` is null
            (True: gallery places no query shows are ignored, MEAN and Sample4Geo on
            University-1652 and SUES-200).
        position_metrics: the dataset's own position metrics beside the metres ones
            (:data:`mean_geo.retrieval.conventions.DATASET_POSITION_METRICS`), or None.
        positive_sets: evaluated by positive sets (true matches shared between queries, GTA-UAV):
            no re-ranking, multi-query or corrupted queries.
        tile_to_ground: ``(tile name, col, row, width, height) -> (east, south)`` map metres of a
            tile pixel, where the dataset defines its tiles' geometry (refined metres); else None.
        refinement_note: why refined positions get no metres here (logged), where ``tile_to_ground`` is None.
    """

    drop_unmatched_gallery: bool = True
    position_metrics: str | None = None
    positive_sets: bool = False
    tile_to_ground: Callable[[str, float, float, int, int], tuple[float, float]] | None = None
    refinement_note: str = (
        "no per-photo ground truth and tile geometry (University-1652 and SUES-200 photos look at their "
        "place's centre; DenseUAV does not define its tiles' scale): refined positions are written, no metres computed"
    )


@dataclass(frozen=True)
class DatasetDescription:
    """What results and the protocol fingerprint say of the evaluated data (no loader, no records).

    Attributes:
        name: the registered name (``dataset.name``).
        layout: the layout it reads.
        synthetic: a synthetic world.
        altitudes: the altitudes or heights chosen, where the layout has them.
        image_size: the evaluation image side.
        root: the dataset's folder (paths in the fingerprint are relative to it).
    """

    name: str
    layout: str
    synthetic: bool
    altitudes: tuple[int, ...] | None
    image_size: int
    root: Path


def _flag(settings: Mapping, key: str) -> bool:
    value = settings.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"eval.{key}={value!r}: expected true or false")
    return value


@dataclass(frozen=True)
class EvalOptions:
    """The evaluation conventions of a run (each recorded in metrics.json).

    Attributes:
        ks: the K of R@K (and of the metres metrics).
        drop_unmatched_gallery: ignore gallery places no query shows; None until resolved against
            the dataset's protocol.
        multi_query: ``none``, or how a place's drone images pool into one query (``mean``/``max``/``vote``).
        flip_tta: embed image + mirror image.
        rerank: k-reciprocal re-ranking settings (extra ``*_rerank`` metrics), or None.
        corruptions: ``(corruption, severity)`` of each corrupted D->S query set (robustness, test only).
        position_metrics: the dataset's own position metrics (from its protocol).
        ranking_k: every query's best gallery items kept in the report (predictions, the browser,
            refinement's top-N).
    """

    ks: tuple[int, ...] = (1, 5, 10)
    drop_unmatched_gallery: bool | None = None
    multi_query: str = "none"
    flip_tta: bool = False
    rerank: RerankSettings | None = None
    corruptions: tuple[tuple[str, int], ...] = ()
    position_metrics: str | None = None
    ranking_k: int = RANKING_K

    def __post_init__(self) -> None:
        if not self.ks:
            raise ConfigError("eval.ks: expected a non-empty list of whole numbers >= 1")
        for k in self.ks:
            whole_number("eval.ks", k, 1)
        check_mode(self.multi_query)
        whole_number("eval.ranking_k", self.ranking_k, 1)

    @classmethod
    def from_settings(cls, settings: Mapping | None, ranking_k: int = RANKING_K) -> EvalOptions:
        """``cfg.eval`` (a plain mapping) checked; a wrong value is one line naming ``eval.<key>``.

        Args:
            settings: the ``eval`` section; keys left out take the defaults of this class and of
                :class:`RerankSettings`.
            ranking_k: how many of each query's best gallery items to keep (refinement may need more).

        Returns:
            The options, the gallery convention still open where the settings leave it null.
        """
        settings = dict(settings or {})
        rerank = None
        if _flag(settings, "rerank"):
            defaults = RerankSettings()
            rerank = RerankSettings(
                k1=settings.get("rerank_k1", defaults.k1),
                k2=settings.get("rerank_k2", defaults.k2),
                lambda_value=settings.get("rerank_lambda", defaults.lambda_value),
            )
        drop = settings.get("drop_unmatched_gallery")
        if drop is not None and not isinstance(drop, bool):
            raise ConfigError(f"eval.drop_unmatched_gallery={drop!r}: expected true, false or null")
        ks = settings.get("ks", cls.ks)
        if not isinstance(ks, Sequence) or isinstance(ks, str):
            raise ConfigError(f"eval.ks={ks!r}: expected a list of whole numbers >= 1")
        return cls(
            ks=tuple(ks),
            drop_unmatched_gallery=drop,
            multi_query=check_mode(settings.get("multi_query", "none")),
            flip_tta=_flag(settings, "flip_tta"),
            rerank=rerank,
            corruptions=tuple(query_conditions(settings.get("corruptions"), settings.get("severities", SEVERITIES))),
            ranking_k=max(RANKING_K, ranking_k),
        )

    def for_dataset(self, protocol: DatasetProtocol, dataset: str, directions: Sequence[str]) -> EvalOptions:
        """These options resolved against a dataset's protocol.

        Args:
            protocol: the dataset's.
            dataset: its name, for the refusal's line.
            directions: the directions it evaluates (corrupted queries need ``d2s``).

        Returns:
            The options with the gallery convention and the position metrics settled.

        Raises:
            ConfigError: an option the protocol has no meaning for.
        """
        if protocol.positive_sets and (self.rerank is not None or self.multi_query != "none" or self.corruptions):
            raise ConfigError(
                f"eval.rerank / eval.multi_query / eval.corruptions: {dataset} is evaluated by positive sets "
                "(true matches shared between queries), without re-ranking, multi-query or corrupted queries; "
                "leave them off"
            )
        if self.corruptions and "d2s" not in directions:
            raise ConfigError("eval.corruptions: they apply to drone queries; add d2s to dataset.directions")
        drop = protocol.drop_unmatched_gallery if self.drop_unmatched_gallery is None else self.drop_unmatched_gallery
        return replace(self, drop_unmatched_gallery=drop, position_metrics=protocol.position_metrics)

    def record(self) -> dict:
        """What metrics.json's ``protocol`` section says of these options."""
        return {
            "drop_unmatched_gallery": self.drop_unmatched_gallery,
            "note": "true = MEAN/Sample4Geo convention (gallery places without a query are ignored)",
            "flip_tta": self.flip_tta,
            "multi_query": self.multi_query,
            "rerank": asdict(self.rerank) if self.rerank is not None else None,
            "corruptions": sorted({name for name, _ in self.corruptions}),
            "severities": sorted({severity for _, severity in self.corruptions}),
        }
