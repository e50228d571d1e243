"""Manifest files: ``<name>.parquet`` plus ``<name>.meta.json`` next to it, written atomically.

The meta file sits beside its manifest (not one ``meta.json`` per folder) because all datasets'
manifests share ``data/splits/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from maskreid.io import atomic_write
from maskreid.splits.protocols import MANIFEST_COLUMNS, ROLES

MANIFEST_SCHEMA = pa.schema(
    [
        ("trial", pa.int64()),
        ("role", pa.string()),
        ("image_id", pa.string()),
        ("sha256", pa.string()),
        ("pid", pa.int64()),
        ("camid", pa.int64()),
    ]
)


def manifest_path(path: str | Path) -> Path:
    """``data/splits/viper`` and ``data/splits/viper.parquet`` both name ``viper.parquet``."""
    path = Path(path)
    return path if path.suffix == ".parquet" else path.with_name(path.name + ".parquet")


def meta_path(path: str | Path) -> Path:
    path = manifest_path(path)
    return path.with_name(path.name.removesuffix(".parquet") + ".meta.json")


def write_manifest(df: pd.DataFrame, path: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write a manifest Parquet file and its meta json (protocol, seed, trials, counts)."""
    path = manifest_path(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"manifest for {path}: missing columns {missing}")
    table = pa.Table.from_pandas(df[MANIFEST_COLUMNS], schema=MANIFEST_SCHEMA, preserve_index=False)
    counts = df.groupby(["trial", "role"]).size()
    full_meta = {
        **meta,
        "columns": MANIFEST_COLUMNS,
        "trials": sorted(int(t) for t in df["trial"].unique()),
        "counts_trial0": {r: int(n) for (t, r), n in counts.items() if t == df["trial"].min()},
    }
    atomic_write(path, lambda p: pq.write_table(table, p, compression="zstd"))
    atomic_write(meta_path(path), lambda p: p.write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n"))
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest, checking its columns and roles (errors name the file)."""
    path = manifest_path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} not found: run `dvc repro splits@<dataset>`")
    df = pq.read_table(path).to_pandas()
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"manifest {path}: missing columns {missing}")
    bad = ~df["role"].isin(ROLES)
    if bad.any():
        raise ValueError(f"manifest {path}: unknown role {df.loc[bad, 'role'].iloc[0]!r} (row {int(bad.idxmax())})")
    return df


def read_meta(path: str | Path) -> dict:
    return json.loads(meta_path(path).read_text())
