"""Archive -> Parquet image shards (+ side files) -> dataset card, as one atomic step.

Rows are sorted by image_id before writing so the shards hold the same bytes whichever form
(zip, tar, folder) the dataset came in; side files are written into the same staging folder
as the shards, and the folder replaces ``out_dir`` only when everything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from maskreid.datasets.base import get_dataset, skipping_corrupt
from maskreid.datasets.card import dataset_card
from maskreid.datasets.download import ensure_all
from maskreid.io import write_json
from maskreid.store.shards import METADATA_COLUMNS, SHARD_GLOB, CorruptImageError, replace_dir, write_shards

log = logging.getLogger("maskreid")


def write_side_file(name: str, obj: Any, folder: Path) -> Path:
    """DataFrames become ``<name>.parquet``, anything else ``<name>.json``."""
    if isinstance(obj, pd.DataFrame):
        path = folder / f"{name}.parquet"
        obj.to_parquet(path, index=False)
    else:
        path = folder / f"{name}.json"
        write_json(path, obj, sort_keys=True)
    if path.match(SHARD_GLOB):
        raise ValueError(f"side file {path.name} would be read as an image shard")
    return path


def read_side_file(shard_dir: str | Path, name: str) -> Any:
    """The inverse of write_side_file, for consumers (e.g. the Market protocol's gt_query)."""
    shard_dir = Path(shard_dir)
    if (shard_dir / f"{name}.parquet").exists():
        return pd.read_parquet(shard_dir / f"{name}.parquet")
    if (shard_dir / f"{name}.json").exists():
        return json.loads((shard_dir / f"{name}.json").read_text())
    raise FileNotFoundError(f"no side file {name}.parquet/.json in {shard_dir}: re-run the ingest stage")


def staging_dir(out_dir: Path) -> Path:
    """Where ``out_dir`` is built before it is moved into place: beside its parent, never inside
    it, so debris of a killed ingest is not part of a tracked out (``data/images`` is a dep of
    every pre-training stage). Leftovers of earlier killed ingests of this dataset are removed."""
    root = out_dir.parent.with_name(f".{out_dir.parent.name}.staging")
    for old in [*root.glob(f"{out_dir.name}-*"), *root.glob(f".{out_dir.name}-*.tmp-*")]:
        shutil.rmtree(old, ignore_errors=True)
    return root / f"{out_dir.name}-{os.getpid()}"


def ingest(
    name: str,
    source: str | Path | None,
    out_dir: str | Path,
    archives_dir: str | Path = "data/archives",
    rows_per_shard: int = 4096,
    skip_corrupt: bool = False,
) -> dict:
    """Ingest dataset ``name`` from ``source`` (a zip/tar/folder the user holds, or None for
    data/archives/ or a download) into ``out_dir``; returns its card (see card.dataset_card).

    The first corrupt image stops the ingest (CorruptImageError naming it). ``skip_corrupt``
    leaves such images out instead, each logged with its reason, and the card counts and names
    them (``corrupt_skipped``, ``corrupt_images``): an opt-in, because a silently smaller set
    changes every number computed on it."""
    t0 = time.perf_counter()
    spec = get_dataset(name)
    side: dict[str, Any] = {}
    if getattr(spec, "files", ()):
        main, extra = ensure_all(spec, archives_dir, source)
        rows_iter = spec.iter_rows(main, side, extra)
        src_desc = str(main)
    else:  # generated sets (synthetic) need no archive
        rows_iter = spec.iter_rows(source, side, {})
        src_desc = "generated"
    try:
        with skipping_corrupt(skip_corrupt):
            rows = sorted(tqdm(rows_iter, desc=f"ingest {name}", unit="img", leave=False), key=lambda r: r["image_id"])
    except CorruptImageError as e:
        raise CorruptImageError(
            f"{e} (ingest.skip_corrupt: true skips corrupt images and names them in the card)"
        ) from e
    ids = [r["image_id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i, j in zip(ids, ids[1:]) if i == j)
        raise ValueError(f"dataset {name!r}: image_id {dup!r} occurs twice in {src_desc}")
    corrupt = [r for r in rows if "corrupt" in r]
    if corrupt:
        for r in corrupt:
            log.warning("skipped: %s", r["corrupt"])
        rows = [r for r in rows if "corrupt" not in r]
    meta = pd.DataFrame({c: [r[c] for r in rows] for c in METADATA_COLUMNS})

    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    try:
        write_shards(iter(rows), staging, rows_per_shard=rows_per_shard)
        del rows
        for side_name, obj in side.items():
            write_side_file(side_name, obj, staging)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    card = dataset_card(meta, junk_pids=getattr(spec, "junk_pids", True))
    card["name"] = name
    card["side_files"] = sorted(side)
    if skip_corrupt:
        card["corrupt_skipped"] = len(corrupt)
        card["corrupt_images"] = [r["image_id"] for r in corrupt]
    card["ingest_seconds"] = round(time.perf_counter() - t0, 1)
    return card
