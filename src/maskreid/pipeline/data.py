"""Stages download, ingest and splits: archive -> receipt -> image shards -> protocol manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from maskreid.config import get
from maskreid.io import file_digest, read_json, write_json
from maskreid.pipeline import IMAGES, METRICS, RECEIPTS, SPLITS, dataset_cfg


def folder_digest(root: str | Path) -> str:
    """sha256 over a folder's files: each relative path and its content's sha256, in path order.

    An extracted dataset folder has no published checksum; this stands in for one, so that a
    file added, removed, renamed or edited changes the receipt.
    """
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        h.update(f"{rel}\0{file_digest(f, 'sha256')}\n".encode())
    return h.hexdigest()


def run_download(name: str, params: dict) -> dict:
    """Verify (or fetch) the dataset's archive and write a small receipt that ingest depends on."""
    from maskreid.datasets.base import get_dataset
    from maskreid.datasets.download import ensure_archive

    cfg = dataset_cfg(name, params)
    if cfg.get("generate") is not None:
        receipt = {"dataset": name, "kind": "generated", "generate": cfg["generate"]}
    else:
        spec = get_dataset(name)
        path = ensure_archive(spec, get(params, "paths.archives"), source=cfg.get("source"))
        folder = Path(path).is_dir()
        receipt = {
            "dataset": name,
            "kind": "folder" if folder else "archive",
            # as configured, not as resolved: the same receipt in a queued experiment's copy
            "path": str(Path(cfg["source"]).expanduser()) if cfg.get("source") else str(path),
            # the content, so that a replaced archive or an edited folder re-runs ingest
            "sha256": folder_digest(path) if folder else file_digest(path, "sha256"),
        }
    write_json(RECEIPTS / f"{name}.json", receipt)
    return receipt


def run_ingest(name: str, params: dict) -> dict:
    """Archive (or the synthetic generator) -> Parquet image shards + dataset card; with
    ``ingest.skip_corrupt`` corrupt images are left out and named in the card."""
    from maskreid.datasets.card import dataset_card
    from maskreid.datasets.download import resolve_source
    from maskreid.store.shards import METADATA_COLUMNS, read_frame, write_shards

    receipt = read_json(RECEIPTS / f"{name}.json")
    out = IMAGES / name
    if receipt["kind"] == "generated":
        from maskreid.datasets import synthetic

        write_shards(synthetic.iter_rows(name=name, **receipt["generate"]), out)
        card = dataset_card(read_frame(out, METADATA_COLUMNS))
    else:
        from maskreid.datasets.ingest import ingest

        card = ingest(name, resolve_source(receipt["path"]), out, archives_dir=get(params, "paths.archives"),
                      skip_corrupt=get(params, "ingest.skip_corrupt"))
    card = {"dataset": name, "source": receipt.get("path", "synthetic"), **card}
    write_json(METRICS / "datasets" / f"{name}.json", card)
    return card


def run_splits(name: str, params: dict) -> dict:
    """Image metadata -> the dataset's protocol manifest (trials x roles), optionally subsampled."""
    from maskreid.splits import build_manifest, subset_manifest, write_manifest
    from maskreid.store.shards import METADATA_COLUMNS, read_frame

    cfg = dataset_cfg(name, params)
    frame = read_frame(IMAGES / name, METADATA_COLUMNS)
    side = {}
    classic = IMAGES / name / "classic_splits.json"
    if classic.exists():
        side["classic_splits"] = read_json(classic)
    seed = get(params, "splits.seed")
    trials = get(params, "splits.trials") if cfg["protocol"] == "single_shot" else None  # others: fixed splits
    manifest = build_manifest(name, frame, cfg["protocol"], seed=seed, trials=trials, side_files=side)
    meta = {"dataset": name, "protocol": cfg["protocol"], "seed": seed, "subset": cfg.get("subset")}
    if cfg.get("subset"):
        manifest = subset_manifest(manifest, **cfg["subset"])
    meta["counts"] = {
        role: {"images": int(len(g)), "ids": int(g.pid.nunique())} for role, g in manifest[manifest.trial == 0].groupby("role")
    }
    write_manifest(manifest, SPLITS / name, meta)
    return meta

