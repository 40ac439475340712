"""Read a W&B offline run file (``run-<id>.wandb``) back, to assert what a run sent.

The file is LevelDB's log format after a 7-byte header (":W&B", magic, version): 32 KiB blocks
of fragments (crc32 4 B, length 2 B, type 1 B: full/first/middle/last), each record a
``wandb_internal_pb2.Record``.  wandb 0.31 ships no Python reader, hence these few lines.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER, FRAGMENT_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, pending = HEADER, b""
    while pos + FRAGMENT_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < FRAGMENT_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + FRAGMENT_HEADER])
        chunk = data[pos + FRAGMENT_HEADER : pos + FRAGMENT_HEADER + length]
        pos += FRAGMENT_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def summarize(run_dir: Path) -> dict:
    """name, group, job_type, config (key → value) and the history keys of one offline run."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    out = {"config": {}, "history_keys": set()}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(name=rec.run.display_name, group=rec.run.run_group, job_type=rec.run.job_type)
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            out["history_keys"].update(i.key or "/".join(i.nested_key) for i in rec.history.item)
    return out
