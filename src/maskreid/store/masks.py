"""Person masks on disk: the persistent per-backend cache and the segment stage's DVC out.

Why two places: the cache (``data/cache/masks/<fingerprint>/part-*.parquet``, keyed by image
sha256) outlives DVC runs and is appended one part at a time, each part written to a temp name and
renamed, so an interrupted segmentation resumes where it stopped and identical images across
datasets are segmented once. The DVC out (``data/masks/<dataset>/``: ``part-*.parquet`` with
image_id, sha256, mask, fg_fraction + ``meta.json``) is rebuilt from the cache as a whole folder
and swapped in atomically.

Masks are PNG-encoded uint8 person probabilities (probability x 255) at the crop's own size.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from maskreid.store.shards import SHARD_GLOB, encode_png, shard_paths, write_shards

CACHE_SCHEMA = pa.schema([("sha256", pa.string()), ("mask", pa.binary()), ("fg_fraction", pa.float32())])
MASK_SCHEMA = pa.schema([("image_id", pa.string()), ("sha256", pa.string()), ("mask", pa.binary()),
                         ("fg_fraction", pa.float32())])
#: fg_fraction in the cache is measured at this probability (the out recomputes at its own threshold)
CACHE_FG_THRESHOLD = 0.5


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    if prob.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {prob.shape}")
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def fg_fraction(mask_u8: np.ndarray, threshold: float) -> float:
    """Fraction of pixels whose probability is >= ``threshold`` (mask as uint8 0..255)."""
    return float((mask_u8 >= threshold * 255.0).mean())


def encode_mask(prob: np.ndarray) -> tuple[bytes, float]:
    """Probability HxW float in [0,1] -> (PNG bytes of uint8 x255, fg fraction at 0.5)."""
    u8 = prob_to_uint8(prob)
    return encode_png(u8), fg_fraction(u8, CACHE_FG_THRESHOLD)


def _write_table_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class MaskCache:
    """Append-only cache of one backend fingerprint's masks, keyed by image sha256."""

    def __init__(self, cache_dir: str | Path, fingerprint: str):
        self.dir = Path(cache_dir) / fingerprint
        self.fingerprint = fingerprint

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob(SHARD_GLOB)) if self.dir.is_dir() else []

    def keys(self) -> set[str]:
        keys: set[str] = set()
        for p in self.parts():
            keys.update(pq.read_table(p, columns=["sha256"]).column("sha256").to_pylist())
        return keys

    def write_meta(self, meta: dict) -> None:
        """Record what produced this cache (for people browsing ``data/cache``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "meta.json"
        if not path.exists():
            tmp = path.with_name(f".meta.json.tmp-{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            os.replace(tmp, path)

    def append(self, sha256: list[str], masks: list[bytes], fg: list[float]) -> Path | None:
        """Write one finished part (temp file, then rename: never half-visible)."""
        if not sha256:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pydict({"sha256": sha256, "mask": masks, "fg_fraction": fg}, schema=CACHE_SCHEMA)
        # sortable, unique across concurrent writers
        path = self.dir / f"part-{len(self.parts()):05d}-{uuid.uuid4().hex[:8]}.parquet"
        _write_table_atomic(table, path)
        return path

    def read(self, wanted: set[str] | None = None) -> dict[str, bytes]:
        """sha256 -> PNG bytes for the wanted keys (all when None)."""
        out: dict[str, bytes] = {}
        for p in self.parts():
            t = pq.read_table(p, columns=["sha256", "mask"])
            if wanted is not None:
                t = t.filter(pc.is_in(t.column("sha256"), value_set=pa.array(sorted(wanted), pa.string())))
            out.update(zip(t.column("sha256").to_pylist(), t.column("mask").to_pylist()))
        return out


def write_mask_shards(rows: Iterable[dict], out_dir: str | Path, meta: dict, rows_per_shard: int = 8192) -> int:
    """Write the segment stage's out (``part-*.parquet`` + ``meta.json``) as one atomic folder swap."""
    meta_text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    return write_shards(rows, out_dir, rows_per_shard, schema=MASK_SCHEMA, extra_files={"meta.json": meta_text})


def read_mask_meta(mask_dir: str | Path) -> dict:
    path = Path(mask_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {mask_dir} is not a finished segment out "
                                "(run `dvc repro segment@<dataset>`)")
    return json.loads(path.read_text())


def read_mask_table(mask_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shard_paths(mask_dir)])


def load_masks(mask_dir: str | Path) -> dict[str, bytes]:
    """sha256 -> PNG mask bytes (uint8 probability x255 at the crop's size) of a segment out."""
    t = read_mask_table(mask_dir, ["sha256", "mask"])
    return dict(zip(t.column("sha256").to_pylist(), t.column("mask").to_pylist()))
