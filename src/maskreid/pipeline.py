"""What each DVC stage does, as library functions: `stages/*.py` only parse their key and call these.

Paths are the pipeline's layout (relative to the repository root, where DVC runs stages):
data/receipts -> data/images -> data/masks -> data/splits -> models -> data/features -> metrics.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskreid.config import ParamsError, get
from maskreid.io import read_json, write_json, write_text

log = logging.getLogger("maskreid")

RECEIPTS = Path("data/receipts")
IMAGES = Path("data/images")
MASKS = Path("data/masks")
SPLITS = Path("data/splits")
MODELS = Path("models")
FEATURES = Path("data/features")
METRICS = Path("metrics")
REPORTS = Path("reports")
MASK_CACHE = Path("data/cache/masks")


def stage_main(fn: Callable[[str, dict], Any], argv: list[str] | None = None) -> None:
    """Entry point of a keyed stage: a known failure prints its message (no traceback) and exits 1."""
    from maskreid.config import load_params
    from maskreid.datasets.download import DatasetUnavailable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    key = argv[0] if argv else ""
    try:
        fn(key, load_params())
    except (DatasetUnavailable, ParamsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def dataset_cfg(name: str, params: dict) -> dict:
    return get(params, f"datasets.{name}")


# --------------------------------------------------------------------------- download / ingest
def run_download(name: str, params: dict) -> dict:
    """Verify (or fetch) the dataset's archive and write a small receipt that ingest depends on."""
    from maskreid.datasets.base import get_dataset
    from maskreid.datasets.download import ensure_archive, file_digest

    cfg = dataset_cfg(name, params)
    if cfg.get("generate") is not None:
        receipt = {"dataset": name, "kind": "generated", "generate": cfg["generate"]}
    else:
        spec = get_dataset(name)
        path = ensure_archive(spec, get(params, "paths.archives"), source=cfg.get("source"))
        receipt = {
            "dataset": name,
            "kind": "folder" if Path(path).is_dir() else "archive",
            "path": str(path),
            "sha256": None if Path(path).is_dir() else file_digest(path, "sha256"),
        }
    write_json(RECEIPTS / f"{name}.json", receipt)
    return receipt


def run_ingest(name: str, params: dict) -> dict:
    """Archive (or the synthetic generator) -> Parquet image shards + dataset card."""
    from maskreid.datasets.card import dataset_card
    from maskreid.store.shards import METADATA_COLUMNS, read_frame, write_shards

    receipt = read_json(RECEIPTS / f"{name}.json")
    out = IMAGES / name
    if receipt["kind"] == "generated":
        from maskreid.datasets import synthetic

        write_shards(synthetic.iter_rows(name=name, **receipt["generate"]), out)
        card = dataset_card(read_frame(out, METADATA_COLUMNS))
    else:
        from maskreid.datasets.ingest import ingest

        card = ingest(name, receipt["path"], out)
    card = {"dataset": name, "source": receipt.get("path", "synthetic"), **card}
    write_json(METRICS / "datasets" / f"{name}.json", card)
    return card


# --------------------------------------------------------------------------- segmentation
def segment_cfg(params: dict, backend: str | None = None) -> dict:
    cfg = dict(get(params, "segment"))
    if backend is not None:  # a comparison backend: its preset defaults
        cfg = {"backend": backend, "batch_size": cfg.get("batch_size", 64), "num_workers": cfg.get("num_workers", 0)}
    return cfg


def run_segment(name: str, params: dict) -> dict:
    """Images -> person masks (resumable cache) + the mask quality report."""
    from maskreid.segment import build_segmenter, segment_dataset
    from maskreid.segment.quality import quality_report

    cfg = segment_cfg(params)
    segmenter = build_segmenter(cfg)
    stats = segment_dataset(
        IMAGES / name,
        MASKS / name,
        segmenter,
        cache_dir=MASK_CACHE,
        batch_size=cfg.get("batch_size", 64),
        num_workers=cfg.get("num_workers", 0),
    )
    compare = {}
    for backend in cfg.get("compare") or []:
        compare[backend] = build_segmenter(segment_cfg(params, backend))
    report = quality_report(
        name,
        IMAGES / name,
        MASKS / name,
        REPORTS / "segmentation" / name,
        compare=compare,
        sample=cfg.get("quality_sample"),
        reference=cfg.get("reference", {}).get(name) if isinstance(cfg.get("reference"), dict) else None,
    )
    result = {"dataset": name, "backend": segmenter.describe(), "run": stats, **report}
    write_json(METRICS / "segmentation" / f"{name}.json", result)
    return result


# --------------------------------------------------------------------------- splits
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
    manifest = build_manifest(name, frame, cfg["protocol"], seed=seed, trials=get(params, "splits.trials"), side_files=side)
    meta = {"dataset": name, "protocol": cfg["protocol"], "seed": seed, "subset": cfg.get("subset")}
    if cfg.get("subset"):
        manifest = subset_manifest(manifest, **cfg["subset"])
    meta["counts"] = {
        role: {"images": int(len(g)), "ids": int(g.pid.nunique())} for role, g in manifest[manifest.trial == 0].groupby("role")
    }
    write_manifest(manifest, SPLITS / name, meta)
    return meta


# --------------------------------------------------------------------------- training
def _train_frame(datasets: list[str], trial: int = 0):
    """Training rows of one or several datasets, identities namespaced and relabelled 0..C-1."""
    from maskreid.splits import merged_train, read_manifest

    manifests = {d: read_manifest(SPLITS / d) for d in datasets}
    return merged_train(manifests, trial=trial)


def _masks_for(datasets: list[str]) -> dict[str, bytes]:
    from maskreid.segment import load_masks

    masks: dict[str, bytes] = {}
    for d in datasets:
        masks.update(load_masks(MASKS / d))
    return masks


def _train(kind: str, key: str, run: dict, datasets: list[str], loss: str, init: Path | None, params: dict) -> dict:
    from dvclive import Live

    from maskreid.train import train_model
    from maskreid.train.data import attach_images

    frame = attach_images(_train_frame(datasets), [IMAGES / d for d in datasets])
    masks = _masks_for(datasets)
    optim = dict(get(params, f"{kind}.optim"))
    optim["seed"] = get(params, "seed")
    loss_cfg = dict(get(params, "loss"))
    out_dir = MODELS / kind / key
    with Live(str(Path("dvclive") / kind / key), dvcyaml=False, save_dvc_exp=False) as live:
        summary = train_model(
            train_frame=frame,
            masks=masks,
            arch=run.get("arch") or _arch_of(init),
            loss_name=loss,
            loss_cfg=loss_cfg,
            sampler_cfg=dict(get(params, "sampler")),
            optim_cfg=optim,
            out_dir=out_dir,
            init_from=init,
            input_size=(get(params, "input.height"), get(params, "input.width")),
            mask_cfg=dict(get(params, "mask")),
            feat_dim=get(params, "model.feat_dim"),
            live=live,
        )
    result = {
        "stage": f"{kind}@{key}",
        "datasets": datasets,
        "loss": loss,
        "images": int(len(frame)),
        "identities": int(frame["label"].nunique()),
        **summary,
    }
    write_json(METRICS / "train" / f"{kind}_{key}.json", result)
    return result


def _arch_of(model_path: Path | None) -> str:
    import torch

    if model_path is None:
        raise ParamsError("a run needs `arch` or an `init` model")
    return torch.load(model_path, map_location="cpu", weights_only=False)["arch"]


def run_pretrain(key: str, params: dict) -> dict:
    run = get(params, f"pretrain.runs.{key}")
    return _train("pretrain", key, run, list(run["sets"]), "softmax", None, params)


def run_finetune(key: str, params: dict) -> dict:
    run = get(params, f"finetune.runs.{key}")
    init = MODELS / "pretrain" / run["init"] / "model.pt"
    return _train("finetune", key, run, [run["dataset"]], run["loss"], init, params)


# --------------------------------------------------------------------------- evaluation
def run_evaluate(key: str, params: dict) -> dict:
    """One table cell: features once (stored), then every protocol the dataset has, with and
    without re-ranking."""
    import numpy as np
    import torch

    from maskreid.evaluate.features import extract_features, save_features
    from maskreid.evaluate.protocols import evaluate_cell
    from maskreid.splits import read_manifest
    from maskreid.train import load_model
    from maskreid.train.data import attach_images

    cell = get(params, f"cells.{key}")
    name = cell["dataset"]
    ecfg = dict(get(params, "evaluate"))
    manifest = read_manifest(SPLITS / name)
    meta = read_json(SPLITS / name / "meta.json")
    test = manifest[manifest.role != "train"]
    images = test.drop_duplicates("image_id").reset_index(drop=True)
    frame = attach_images(images, [IMAGES / name])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = MODELS / cell["model"] / "model.pt"
    model, info = load_model(model_path, device)
    masks = _masks_for([name]) if model.num_streams > 1 else None
    feats = extract_features(
        model,
        frame,
        masks,
        size=(get(params, "input.height"), get(params, "input.width")),
        batch_size=ecfg.get("batch_size", 256),
        device=device,
        mask_cfg=dict(get(params, "mask")),
        flip=ecfg.get("flip", False),
    )
    save_features(FEATURES / f"{key}.npz", feats, frame)
    index = {iid: i for i, iid in enumerate(frame.image_id)}
    results = evaluate_cell(
        manifest=test,
        feats=feats,
        index=index,
        protocol=meta["protocol"],
        ap=ecfg["ap"],
        rerank=ecfg["rerank"],
        max_rank=ecfg.get("max_rank", 50),
    )
    seg = read_json(MASKS / name / "meta.json") if (MASKS / name / "meta.json").exists() else {}
    train_info = info.get("train_summary", {})
    out = {
        "cell": key,
        "model": cell["model"],
        "dataset": name,
        "protocol": meta["protocol"],
        "setup": {
            "arch": info.get("arch"),
            "pretrain_sets": _pretrain_sets(cell["model"], params),
            "mask_backend": seg.get("backend"),
            "ap_rule": ecfg["ap"],
            "subset": meta.get("subset"),
        },
        **results,
    }
    out["train_summary"] = {k: v for k, v in train_info.items() if isinstance(v, (int, float, str))}
    write_json(METRICS / "cells" / f"{key}.json", out)
    cmc = results.get("sq", {}).get("cmc") or []
    write_json(REPORTS / "cmc" / f"{key}.json", [{"rank": i + 1, "cmc": float(np.round(c, 4))} for i, c in enumerate(cmc)])
    return out


def _pretrain_sets(model: str, params: dict) -> list[str]:
    kind, key = model.split("/", 1)
    if kind == "pretrain":
        return list(get(params, f"pretrain.runs.{key}.sets", []))
    init = get(params, f"finetune.runs.{key}.init", None)
    return list(get(params, f"pretrain.runs.{init}.sets", [])) if init else []


# --------------------------------------------------------------------------- report
def run_report(_key: str, params: dict) -> dict:
    from maskreid.report import build_report, load_cells

    cells = load_cells(METRICS / "cells")
    md, js = build_report(get(params, "cells"), cells)
    write_text(REPORTS / "tables.md", md)
    write_json(REPORTS / "tables.json", js)
    return js
