"""Challenge submissions (University-160k / ACM MM UAVM): for every query, in the order the
challenge gives (e.g. ``query_drone_name.txt``), the names of its top-10 gallery images — file
names without their extension — tab-separated, one line per query.  Queries need no labels; the
ranking streams over the gallery (chunked top-k: never a queries × gallery matrix)."""

from __future__ import annotations

from pathlib import Path

import torch

from mean_geo.data.layouts import list_images
from mean_geo.errors import ConfigError
from mean_geo.retrieval.search import topk_search
from mean_geo.utils.atomic import atomic_path
from mean_geo.utils.output import writable_file

TOP_K = 10


def ordered_queries(
    folder: str | Path, order_file: str | Path | None, arg: str = "eval.submission_queries"
) -> list[Path]:
    """The query images of ``folder``: in the order of ``order_file`` (one file name per line) when
    given, else sorted."""
    images = list_images([folder], arg)
    if order_file is None:
        return images
    order_path = Path(order_file).expanduser()
    if not order_path.is_file():
        raise ConfigError(f"eval.submission_order={order_path}: no such file")
    by_name = {p.name: p for p in images}
    names = [line.strip() for line in order_path.read_text().splitlines() if line.strip()]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(
            f"eval.submission_order={order_path}: {len(missing)} name(s) not in {folder}, e.g. {missing[0]}"
        )
    return [by_name[n] for n in names]


def refuse_existing(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"eval.submission={out}: exists; choose another name (a submission is never overwritten)")
    return out


def write_submission(
    out: str | Path,
    query_emb: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_names: list[str],
    k: int = TOP_K,
    query_chunk: int = 1024,
) -> Path:
    """One line per query row of ``query_emb``: its ``k`` best gallery names, tab-separated.
    Written under a partial name, then renamed: complete or absent."""
    out = writable_file(refuse_existing(out), "eval.submission")
    k = min(k, gallery_emb.shape[0])
    with atomic_path(out) as partial, partial.open("w") as fh:
        for start in range(0, query_emb.shape[0], query_chunk):
            _, top = topk_search(query_emb[start : start + query_chunk], gallery_emb, k=k)
            fh.writelines("\t".join(gallery_names[j] for j in row) + "\n" for row in top.tolist())
    return out
