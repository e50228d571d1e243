"""The segment stage's library function: image shards -> person masks, through the mask cache.

Why this shape: segmentation is the slowest step before training and its result depends only on
(image bytes, backend fingerprint), so masks are cached by image sha256 per fingerprint and
appended one finished part at a time. A rerun computes nothing; an interrupted run recomputes
only what no finished part holds. The DVC out is then assembled from the cache and swapped in
atomically, so it is never half-written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from maskreid.segment.base import Segmenter, build_segmenter
from maskreid.store.masks import MaskCache, encode_mask, fg_fraction, write_mask_shards
from maskreid.store.shards import decode_image, read_frame, shard_paths

log = logging.getLogger(__name__)


class _Crops(Dataset):
    """Decodes crops in DataLoader workers; a corrupt image raises CorruptImageError naming it."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        return {**row, "rgb": decode_image(row["image"], row["image_id"])}


def _collate(items: list[dict]) -> list[dict]:
    return items


def segment_dataset(
    shards_dir: str | Path,
    out_dir: str | Path,
    segmenter: Segmenter | dict,
    cache_dir: str | Path = "data/cache/masks",
    batch_size: int = 64,
    num_workers: int = 0,
    threshold: float = 0.5,
    flush_every: int = 2048,
    progress: bool = True,
) -> dict:
    """Segment every crop of an image shard set; write ``out_dir`` (part-*.parquet + meta.json).

    ``segmenter`` is a :class:`Segmenter` or a config dict for :func:`build_segmenter`.
    ``threshold`` defines the out's ``fg_fraction`` (the stored masks stay soft). Cache parts
    are written at least once per input shard and every ``flush_every`` computed crops.
    Returns stats: counts (images, unique, cached, computed), seconds, crops_per_s, fingerprint.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    seg = segmenter if isinstance(segmenter, Segmenter) else build_segmenter(segmenter)
    fp = seg.fingerprint
    cache = MaskCache(cache_dir, fp)
    cache.write_meta({"backend": seg.name, "fingerprint": fp})

    index = read_frame(shards_dir, columns=["image_id", "sha256"])
    dup = index["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"{shards_dir}: image_id {index['image_id'][dup].iloc[0]!r} appears more than once")
    wanted = set(index["sha256"])
    todo = wanted - cache.keys()
    n_cached = len(wanted) - len(todo)
    log.info("segment %s with %s: %d images, %d unique, %d cached, %d to compute",
             shards_dir, seg.describe(), len(index), len(wanted), n_cached, len(todo))

    columns = ["image_id", "sha256", "image", *seg.needs_columns]
    t0 = time.perf_counter()
    n_computed = 0
    bar = tqdm(total=len(todo), unit="crop", desc=f"segment {seg.name}", disable=not progress)
    try:
        for path in shard_paths(shards_dir) if todo else []:
            table = pq.read_table(path, columns=columns)
            rows = []
            for row in table.to_pylist():
                if row["sha256"] in todo:
                    todo.discard(row["sha256"])  # identical bytes under two ids: segment once
                    rows.append(row)
            if not rows:
                continue
            loader = DataLoader(_Crops(rows), batch_size=batch_size, num_workers=num_workers,
                                collate_fn=_collate, shuffle=False)
            buf: tuple[list, list, list] = ([], [], [])
            for items in loader:
                images = [it["rgb"] for it in items]
                probs = seg.predict_rows(images, items)
                if len(probs) != len(items):
                    raise RuntimeError(f"{seg.name}: returned {len(probs)} masks for {len(items)} crops")
                for it, img, p in zip(items, images, probs):
                    if p.shape != img.shape[:2]:
                        raise RuntimeError(f"{seg.name}: mask {p.shape} for image {it['image_id']!r} of size "
                                           f"{img.shape[:2]}; backends must return masks at the crop's size")
                    png, fg = encode_mask(p)
                    buf[0].append(it["sha256"])
                    buf[1].append(png)
                    buf[2].append(fg)
                n_computed += len(items)
                bar.update(len(items))
                if len(buf[0]) >= flush_every:
                    cache.append(*buf)
                    buf = ([], [], [])
            cache.append(*buf)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0

    masks = cache.read(wanted)
    missing = wanted - masks.keys()
    if missing:
        raise RuntimeError(f"mask cache {cache.dir} lacks {len(missing)} masks after segmentation "
                           f"(e.g. sha256 {sorted(missing)[0]})")
    fg_by_sha = {s: fg_fraction(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED), threshold)
                 for s, b in masks.items()}
    meta = {"backend": seg.name, "fingerprint": fp, "threshold": threshold}
    rows_out = ({"image_id": i, "sha256": s, "mask": masks[s], "fg_fraction": fg_by_sha[s]}
                for i, s in zip(index["image_id"], index["sha256"]))
    write_mask_shards(rows_out, out_dir, meta)
    stats = {
        "backend": seg.name, "fingerprint": fp, "images": len(index), "unique": len(wanted),
        "cached": n_cached, "computed": n_computed, "seconds": round(seconds, 3),
        "crops_per_s": round(n_computed / seconds, 2) if n_computed and seconds > 0 else None,
    }
    log.info("segment done: %s", stats)
    return stats
