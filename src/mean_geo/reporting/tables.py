"""Runs into tables: one table per protocol (never two protocols ranked together), one row per
configuration, the seeds of a configuration summarised as mean ± standard deviation."""

from __future__ import annotations

import difflib
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mean_geo.errors import ConfigError
from mean_geo.reporting.runs import RunResult
from mean_geo.retrieval.protocol import convention_protocol

#: the run settings a row can differ in (the report shows those that vary within a table)
CONFIG_FIELDS = (
    "method",
    "architecture",
    "backbone",
    "loss",
    "dataset",
    "altitude",
    "image_size",
    "batch_size",
    "epochs",
    "experiment",
    "entry",
    "overrides",
)
#: metrics shown by default, where a table has them
DEFAULT_METRICS = ("R@1", "R@5", "R@10", "AP", "Dis@1", "SDM@1", "mean_m", "median_m", "Acc@20m", "Acc@50m", "Acc@100m")
#: what rows are ordered by when not told: retrieval's R@1, else (flights: no R@1) Acc@50m
DEFAULT_SORTS = ("R@1", "Acc@50m")
#: protocol fields, in the order a table's heading names them
PROTOCOL_FIELDS = (
    "dataset",
    "layout",
    "synthetic",
    "altitude",
    "image_size",
    "direction",
    "convention",
    "split",
    "drop_unmatched_gallery",
    "flip_tta",
    "rerank",
    "metric_definitions",
)


def _config(run: RunResult) -> dict:
    """What makes two runs the same configuration: everything but the seed and the commit."""
    overrides = [o for o in run.run.get("overrides") or [] if not str(o).lstrip("+~").startswith("seed=")]
    found = {name: run.run.get(name) for name in CONFIG_FIELDS if name != "overrides"}
    found["overrides"] = " ".join(map(str, overrides)) or None
    return found


@dataclass
class Row:
    """One configuration under one protocol: its runs (seeds) and their metric values."""

    config: dict
    runs: list[RunResult] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list:
        return [r.run.get("seed") for r in self.runs]

    def mean(self, metric: str) -> float | None:
        found = self.values.get(metric)
        return statistics.fmean(found) if found else None

    def std(self, metric: str) -> float | None:
        """Sample standard deviation over the runs (None for one run)."""
        found = self.values.get(metric)
        return statistics.stdev(found) if found and len(found) > 1 else None


@dataclass
class ReportTable:
    """The rows evaluated under one protocol."""

    protocol: dict
    rows: list[Row]
    columns: list[str]  # configuration columns shown
    metrics: list[str]
    label: str = ""  # the values of the fields in which the protocols of the report differ


def describe_protocol(protocol: dict) -> str:
    """One line: the protocol of a table, for its heading."""
    split = protocol.get("split") or {}
    altitude = protocol.get("altitude")
    parts = [
        f"{protocol.get('dataset')}{' (synthetic)' if protocol.get('synthetic') else ''}",
        f"altitude {','.join(map(str, altitude))} m" if altitude else "",
        f"{protocol.get('image_size')} px" if protocol.get("image_size") else "",
        f"{protocol.get('convention')}",
        (
            f"{split.get('queries')} queries, {split.get('gallery')} gallery ({split.get('ranked_gallery')} ranked), "
            f"split {split.get('split')}"
            if split
            else "split unknown"
        ),
        "unmatched gallery places dropped" if protocol.get("drop_unmatched_gallery") else "full gallery",
        "flip-TTA" if protocol.get("flip_tta") else "no flip-TTA",
        f"re-ranking k1={protocol['rerank']['k1']} k2={protocol['rerank']['k2']}" if protocol.get("rerank") else "",
        f"protocol {protocol.get('id')}",
    ]
    if protocol.get("dataset") is None:
        return f"{protocol.get('convention')}: protocol unknown (metrics.json written before protocol fingerprints)"
    return " · ".join(p for p in parts if p)


def _field_text(name: str, value: object) -> str:
    if name == "split" and isinstance(value, dict):
        return f"split {value.get('split')} ({value.get('queries')} queries)"
    if name == "metric_definitions":
        return "metric definitions " + ("differ" if value else "unknown")
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"{name} {value}"


def differing_fields(protocols: Sequence[dict]) -> list[str]:
    """The protocol fields whose values are not the same in all of ``protocols``."""
    return [
        name
        for name in PROTOCOL_FIELDS
        if len({json.dumps(p.get(name), sort_keys=True, default=str) for p in protocols}) > 1
    ]


def build_tables(
    runs: Sequence[RunResult],
    metrics: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    sort: str | None = None,
    ascending: bool = False,
    conventions: Sequence[str] | None = None,
) -> tuple[list[ReportTable], list[str]]:
    """Group runs by protocol, then by configuration.

    Args:
        runs: as :func:`mean_geo.reporting.runs.find_runs` reads them.
        metrics: the metric columns (default: those of :data:`DEFAULT_METRICS` the table has).
        columns: the configuration columns (default: those that vary within the table).
        sort: the metric rows are ordered by (mean); default the first of :data:`DEFAULT_SORTS` found.
        ascending: lowest first (for metres), instead of highest first.
        conventions: only these conventions (``d2s``, ``s2d_rerank``, …); default all.

    Returns:
        The tables, and the protocol fields in which they differ.
    """
    refuse_unknown("--columns", columns or (), [*CONFIG_FIELDS, "seed", "n"])
    found_conventions = sorted({c for run in runs for c in run.metrics})
    refuse_unknown("--conventions", conventions or (), found_conventions, in_runs=True)
    found_metrics = sorted(
        {m for run in runs for c, values in run.metrics.items() if not conventions or c in conventions for m in values}
    )
    refuse_unknown("--metrics", metrics or (), found_metrics, in_runs=True)
    if sort is None:
        sort = next((m for m in DEFAULT_SORTS if m in found_metrics), found_metrics[0] if found_metrics else "R@1")
    refuse_unknown("--sort", [sort], found_metrics, in_runs=True)
    groups: dict[str, tuple[dict, dict[str, Row]]] = {}
    for run in runs:
        for convention, values in run.metrics.items():
            if conventions and convention not in conventions:
                continue
            protocol = convention_protocol(run.fingerprint, convention)
            _, rows = groups.setdefault(protocol["id"], (protocol, {}))
            config = _config(run)
            row = rows.setdefault(json.dumps(config, sort_keys=True, default=str), Row(config))
            row.runs.append(run)
            for metric, value in values.items():
                row.values.setdefault(metric, []).append(value)
    if not groups:
        raise ConfigError(f"--conventions {','.join(conventions or [])}: no run has these conventions")
    # what separates tables of the same convention (direction and convention always head a table)
    by_convention: dict[str, list[dict]] = {}
    for protocol, _ in groups.values():
        by_convention.setdefault(str(protocol.get("convention")), []).append(protocol)
    differ = [
        name
        for name in PROTOCOL_FIELDS
        if name not in ("direction", "convention") and any(name in differing_fields(p) for p in by_convention.values())
    ]
    tables = []
    for protocol, rows in groups.values():
        table_rows = list(rows.values())
        present = {m for row in table_rows for m in row.values}
        shown_metrics = [m for m in (metrics or DEFAULT_METRICS) if m in present or metrics]
        varying = [c for c in CONFIG_FIELDS if len({json.dumps(r.config.get(c), default=str) for r in table_rows}) > 1]
        shown_columns = list(columns) if columns else (varying or ["method"])
        table_rows.sort(key=lambda r: _sort_key(r, sort, ascending))
        label = ", ".join(
            [str(protocol.get("convention")), *(_field_text(name, protocol.get(name)) for name in differ)]
        )
        tables.append(ReportTable(protocol, table_rows, shown_columns, shown_metrics, label))
    tables.sort(key=lambda t: (str(t.protocol.get("dataset")), str(t.protocol.get("convention")), t.label))
    return tables, differ


def refuse_unknown(option: str, given: Sequence[str], known: Sequence[str], in_runs: bool = False) -> None:
    """One line for names an option does not know (a typo of ``R@1`` sorted nothing and printed a
    column of dashes), with the closest known names.

    Raises:
        ConfigError: some of ``given`` are not in ``known``.
    """
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    close = sorted({c for name in unknown for c in difflib.get_close_matches(name, known, n=3, cutoff=0.5)})
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = "the runs have only" if in_runs else "expected some of"
    raise ConfigError(f"{option} {','.join(unknown)}: {where} {', '.join(known)}{hint}")


def _sort_key(row: Row, metric: str, ascending: bool) -> tuple:
    value = row.mean(metric)
    if value is None:
        return (1, 0.0)
    return (0, value if ascending else -value)


def cell_text(row: Row, column: str) -> str:
    """A configuration cell (``seed`` lists the seeds, ``n`` counts them)."""
    if column == "seed":
        return ",".join(str(s) for s in row.seeds)
    if column == "n":
        return str(row.n)
    value = row.config.get(column)
    return "-" if value is None else str(value)


def metric_text(row: Row, metric: str, plus_minus: str = " ± ") -> str:
    """``mean ± std`` over the runs (2 decimals), the value alone for one run, ``-`` when absent."""
    mean, std = row.mean(metric), row.std(metric)
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f}{plus_minus}{std:.2f}"


def browser_links(row: Row, relative_to: Path) -> list[tuple[str, str]]:
    """``(label, relative path)`` of each run's error browser, for the HTML report."""
    import os

    found = []
    for run in row.runs:
        if run.browser is not None:
            label = f"seed {run.run.get('seed')}" if run.run.get("seed") is not None else run.folder.name
            found.append((label, Path(os.path.relpath(run.browser, relative_to)).as_posix()))
    return found
