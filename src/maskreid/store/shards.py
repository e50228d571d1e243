"""Parquet image shards: many small crops as a few large files DVC can hash quickly.

One shard set per dataset lives in a folder of ``part-NNNNN.parquet`` files. The folder is
written atomically (a sibling temp folder, then a rename), so an interrupted ingest never
leaves a half-written shard set that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # unique within the dataset: "<dataset>/<path in archive layout>"
        ("dataset", pa.string()),
        ("pid", pa.int64()),  # dataset-native identity; Market/Duke: -1 junk, 0 distractor
        ("camid", pa.int64()),  # 0-based camera index
        ("split", pa.string()),  # train | query | gallery | multiquery | all
        ("image", pa.binary()),  # encoded bytes exactly as in the archive (JPEG/BMP/PNG)
        ("sha256", pa.string()),  # of `image`
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("gt_mask", pa.binary()),  # PNG, uint8 0/255, same size as image; null where none ships
    ]
)

SHARD_GLOB = "part-*.parquet"


class CorruptImageError(ValueError):
    """An image's bytes do not decode; the message names the image."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, image_id: str = "<unknown>", strict: bool = False) -> np.ndarray:
    """Decode encoded bytes to an RGB uint8 HxWx3 array, naming the image on failure.

    ``strict`` also refuses a JPEG whose data libjpeg finds damaged (garbage inside the entropy-
    coded data: OpenCV returns a picture with a smeared band and libjpeg only prints a warning).
    Ingest decodes every image so; readers of the shards, which hold only images that passed,
    decode without the check."""
    if not data:
        raise CorruptImageError(f"image {image_id!r}: empty bytes")
    buf = np.frombuffer(data, np.uint8)
    if strict and data[:2] == _JPEG_SOI:
        arr, damage = _decode_jpeg_checked(buf)
        if damage:
            more = f" (+{len(damage) - 1} more)" if len(damage) > 1 else ""
            raise CorruptImageError(
                f"image {image_id!r}: damaged JPEG data (libjpeg: {damage[0]}{more}); it would decode "
                "to a corrupted picture"
            )
    else:
        arr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if arr is None:
        raise CorruptImageError(f"image {image_id!r}: cannot be decoded (truncated or not an image)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


_JPEG_SOI = b"\xff\xd8"
# libjpeg's warnings about damaged data (jerror.h, JWRN_*): decoding goes on after them
_JPEG_DAMAGE = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid SOS parameters",
                "Inconsistent progression sequence")
_stderr_lock = threading.Lock()
_capture: dict[int, IO[bytes]] = {}  # pid -> temp file (a forked child must not share its parent's)


def _decode_jpeg_checked(buf: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """cv2.imdecode with fd 2 sent to a temp file meanwhile: libjpeg reports damaged data only
    there (OpenCV keeps its default message handler). Returns the array and libjpeg's damage
    warnings; any other text caught in the window is written on to stderr."""
    with _stderr_lock:
        f = _capture.get(os.getpid())
        if f is None:
            f = _capture[os.getpid()] = tempfile.TemporaryFile()
        f.seek(0)
        f.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            arr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        if os.fstat(f.fileno()).st_size == 0:
            return arr, []
        f.seek(0)
        lines = f.read().decode("utf-8", "replace").splitlines()
    damage = [ln for ln in lines if ln.startswith(_JPEG_DAMAGE)]
    other = [ln for ln in lines if ln not in damage]
    if other:
        print("\n".join(other), file=sys.stderr)
    return arr, damage


def encode_png(arr: np.ndarray) -> bytes:
    """Encode an RGB HxWx3 or a single-channel HxW uint8 array as PNG bytes (lossless)."""
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_mask(data: bytes, key: str = "<unknown>") -> np.ndarray:
    """Decode a PNG mask to uint8 HxW (0..255)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise CorruptImageError(f"mask {key!r}: cannot be decoded")
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr


def _batched(rows: Iterable[dict], n: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp folder over ``final`` (old contents removed only after success)."""
    if final.exists():
        old = _tmp_sibling(final)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


def write_shards(
    rows: Iterable[dict],
    out_dir: str | Path,
    rows_per_shard: int = 4096,
    schema: pa.Schema = IMAGE_SCHEMA,
    extra_files: dict[str, str] | None = None,
) -> int:
    """Write rows (dicts keyed by schema field names; missing nullable fields become null)
    as Parquet shards into ``out_dir`` atomically, with ``extra_files`` (name -> text, e.g. a
    meta.json) inside the same folder swap. Returns the number of rows written."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out_dir)
    tmp.mkdir()
    n = 0
    try:
        for i, batch in enumerate(_batched(rows, rows_per_shard)):
            cols = {f.name: [r.get(f.name) for r in batch] for f in schema}
            table = pa.Table.from_pydict(cols, schema=schema)
            pq.write_table(table, tmp / f"part-{i:05d}.parquet", compression="zstd")
            n += len(batch)
        if n == 0:  # an empty set still gets one shard, so readers see the schema
            pq.write_table(schema.empty_table(), tmp / "part-00000.parquet")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n


def shard_paths(shard_dir: str | Path) -> list[Path]:
    shard_dir = Path(shard_dir)
    paths = sorted(shard_dir.glob(SHARD_GLOB))
    if not paths:
        raise FileNotFoundError(
            f"no Parquet shards ({SHARD_GLOB}) in {shard_dir}: run the stage that writes it "
            "(e.g. `dvc repro ingest@<dataset>`)"
        )
    return paths


def read_table(shard_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read all shards of a folder as one Arrow table (only the requested columns)."""
    tables = [pq.read_table(p, columns=columns) for p in shard_paths(shard_dir)]
    return pa.concat_tables(tables)


def read_frame(shard_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read shards as a pandas DataFrame; pass ``columns`` to skip the image bytes."""
    return read_table(shard_dir, columns).to_pandas()


METADATA_COLUMNS = ["image_id", "dataset", "pid", "camid", "split", "sha256", "width", "height"]
