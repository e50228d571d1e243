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
MASK_VARIANTS = Path("data/mask_variants")  # other backends' masks of one dataset's split images


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

        card = ingest(name, receipt["path"], out, archives_dir=get(params, "paths.archives"))
    card = {"dataset": name, "source": receipt.get("path", "synthetic"), **card}
    write_json(METRICS / "datasets" / f"{name}.json", card)
    return card


# --------------------------------------------------------------------------- segmenter training
def run_train_segmenter(key: str, params: dict) -> dict:
    """Real parsing masks -> a person segmenter for re-ID crops (checkpoint + ONNX) + its metrics."""
    from dvclive import Live

    from maskreid.segment.trainer import train_segmenter

    cfg = dict(get(params, f"segmenter.runs.{key}"))
    cfg["parsing_tar"] = cfg.pop("parsing_source")
    cfg["market_tar"] = cfg.pop("images_source")
    out_dir = MODELS / "segmenter" / key
    with Live(str(Path("dvclive") / "segmenter" / key), dvcyaml=False, save_dvc_exp=False) as live:
        summary = train_segmenter(cfg, out_dir, live=live)
    write_json(METRICS / "segmenter" / f"{key}.json", {"run": key, **summary})
    return summary


# --------------------------------------------------------------------------- segmentation
def _segmenter_cfg(cfg: dict) -> dict:
    """params.segment -> build_segmenter's dict (backend + that backend's own params)."""
    backend = cfg["backend"]
    out: dict[str, Any] = {"backend": backend}
    if backend == "torchvision":
        out.update(model=cfg["model"], size=list(cfg.get("working_size", [256, 128])), batch_size=cfg.get("batch_size", 64))
    elif backend == "smp":
        out.update(path=cfg["model"], runtime=cfg.get("runtime", "auto"))
    elif backend == "onnx":
        out.update(preset=cfg["model"])
    return out


def _segmenter_held_out(cfg: dict) -> set[int] | None:
    """Identities a trained smp segmenter never trained on (from its checkpoint), else None."""
    if cfg.get("backend") != "smp":
        return None
    import torch

    ckpt = torch.load(cfg["model"], map_location="cpu", weights_only=False)
    pids = (ckpt.get("train_summary") or {}).get("val_pids")
    return {int(p) for p in pids} if pids else None


def _compare_cfg(name: str) -> dict:
    """A comparison backend by short name: an ONNX preset, grabcut, or a torchvision model."""
    if name in ("pose", "deeplab_voc", "bodypix"):
        return {"backend": "onnx", "preset": name}
    if name in ("grabcut", "ground_truth"):
        return {"backend": name}
    return {"backend": "torchvision", "model": name}


def run_segment(name: str, params: dict) -> dict:
    """Images -> person masks (resumable cache) + the mask quality report.

    The main backend segments every crop. The backends in ``segment.compare`` are measured on a
    fixed seeded sample (``segment.quality_sample`` crops, all when null) against the reference
    masks (``segment.reference.<dataset>``: a human-parsing tar; else the dataset's gt_mask), so
    the report ranks every backend on the same crops.
    """
    import time

    from maskreid.segment import build_segmenter
    from maskreid.segment.quality import parsing_reference, quality_report
    from maskreid.segment.run import segment_dataset
    from maskreid.segment.torchvision_seg import WeightsUnavailableError
    from maskreid.store.shards import decode_image, read_frame, write_shards

    cfg = dict(get(params, "segment"))
    threshold = get(params, "mask.threshold")
    report_dir = REPORTS / "segmentation" / name
    stats = segment_dataset(
        IMAGES / name, MASKS / name, build_segmenter(_segmenter_cfg(cfg)), cache_dir=MASK_CACHE,
        batch_size=cfg.get("batch_size", 64), num_workers=cfg.get("num_workers", 0), threshold=threshold,
    )
    ref_src = (cfg.get("reference") or {}).get(name)
    meta = read_frame(IMAGES / name, ["image_id", "split", "pid"])
    reference = parsing_reference(ref_src, meta.image_id.tolist()) if ref_src else None
    held_out = _segmenter_held_out(cfg)
    if reference is not None and held_out is not None:
        # a segmenter trained on these very reference masks is only measured on identities it
        # never saw in training; every other backend is measured on the same crops
        keep = set(meta.image_id[meta.pid.isin(held_out) & (meta.split == "train")])
        reference = {k: v for k, v in reference.items() if k in keep}
    main = quality_report(MASKS / name, report_dir, images_dir=IMAGES / name, reference=reference, threshold=threshold)
    result: dict[str, Any] = {
        "dataset": name, "backend": stats["backend"], "run": stats,
        "reference": ref_src or "gt_mask (where the dataset ships one)",
        "reference_subset": (f"held-out identities of the trained segmenter ({len(held_out)} ids)"
                             if reference is not None and held_out is not None else "all"),
        "quality": main,
    }

    compare = list(cfg.get("compare") or [])
    if compare:
        pool = meta[meta.image_id.isin(reference)] if reference else meta
        n = cfg.get("quality_sample")
        sample = pool.sample(n=min(n, len(pool)), random_state=0) if n else pool
        frame = read_frame(IMAGES / name)
        frame = frame[frame.image_id.isin(set(sample.image_id))]
        sample_dir = Path("data/cache/quality") / name / "images"
        write_shards(frame.to_dict("records"), sample_dir)
        speed_rows = frame.iloc[:32].to_dict("records")
        speed_batch = [decode_image(r["image"], r["image_id"]) for r in speed_rows]
        outs: dict[str, Path] = {}
        per_backend: dict[str, Any] = {}
        # the main backend first (its masks come straight from the cache), then each comparison
        for b, bcfg in [(f"{stats['backend']} (main)", _segmenter_cfg(cfg))] + [(b, _compare_cfg(b)) for b in compare]:
            slug = b.split(" ")[0] + ("_main" if b.endswith("(main)") else "")
            out = Path("data/cache/quality") / name / slug
            try:
                seg = build_segmenter(bcfg)
            except (FileNotFoundError, WeightsUnavailableError) as e:  # no weights here (offline)
                per_backend[b] = {"skipped": str(e)}
                continue
            segment_dataset(sample_dir, out, seg, cache_dir=MASK_CACHE, batch_size=cfg.get("batch_size", 64),
                            threshold=threshold, progress=False)
            q = quality_report(out, report_dir / slug, images_dir=sample_dir, reference=reference, threshold=threshold)
            t0 = time.perf_counter()  # speed on a fixed batch of real crops (the cache may hold the masks)
            seg.predict_rows(speed_batch, speed_rows)
            per_backend[b] = {"crops_per_s": round(len(speed_batch) / (time.perf_counter() - t0), 1), **q}
            outs[b] = out
        result["compare"] = {"sample": int(len(sample)), "backends": per_backend}
        from maskreid.segment.quality import pairwise_iou

        result["pairwise_iou"] = pairwise_iou(outs, threshold)
    write_json(METRICS / "segmentation" / f"{name}.json", result)
    return result


def _variant_segmenter_cfg(segmenter: str, params: dict) -> dict:
    """A mask variant's backend: "main" is the profile's own segment backend, else a short name."""
    return _segmenter_cfg(dict(get(params, "segment"))) if segmenter == "main" else _compare_cfg(segmenter)


def run_segment_variant(key: str, params: dict) -> dict:
    """Masks of one dataset's split images (train and test, every trial) from another backend.

    Why: what masks do to re-ID is measured by fine-tuning and evaluating the same model with each
    backend's masks; only the images the protocol uses need them, which keeps slow backends
    (GrabCut, ~30 crops/s) affordable on a subset.
    """
    from maskreid.segment import build_segmenter
    from maskreid.segment.quality import quality_report
    from maskreid.segment.run import segment_dataset
    from maskreid.splits import read_manifest
    from maskreid.store.shards import read_frame, write_shards

    v = get(params, f"mask_variants.{key}")
    name = v["dataset"]
    used = set(read_manifest(SPLITS / name).image_id)
    frame = read_frame(IMAGES / name)
    frame = frame[frame.image_id.isin(used)]
    images_dir = Path("data/cache/mask_variants") / key / "images"
    write_shards(frame.to_dict("records"), images_dir)
    threshold = get(params, "mask.threshold")
    cfg = dict(get(params, "segment"))
    stats = segment_dataset(images_dir, MASK_VARIANTS / key, build_segmenter(_variant_segmenter_cfg(v["segmenter"], params)),
                            cache_dir=MASK_CACHE, batch_size=cfg.get("batch_size", 64), threshold=threshold)
    quality = quality_report(MASK_VARIANTS / key, REPORTS / "segmentation" / "variants" / key, images_dir=images_dir,
                             reference={}, threshold=threshold)
    out = {"variant": key, "dataset": name, "segmenter": v["segmenter"], "run": stats, "quality": quality}
    write_json(METRICS / "segmentation" / "variants" / f"{key}.json", out)
    return out


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


# --------------------------------------------------------------------------- training
def _train_frame(datasets: list[str], trial: int = 0):
    """Training rows of one or several datasets, identities namespaced and relabelled 0..C-1."""
    from maskreid.splits import merged_train, read_manifest

    manifests = {d: read_manifest(SPLITS / d) for d in datasets}
    return merged_train(manifests, trial=trial)


def _masks_for(mask_dirs: list[Path]) -> dict[str, bytes]:
    from maskreid.store.masks import load_masks

    masks: dict[str, bytes] = {}
    for d in mask_dirs:
        masks.update(load_masks(d))
    return masks


def _train(kind: str, key: str, run: dict, datasets: list[str], loss: str, init: Path | None, params: dict,
           mask_dirs: list[Path] | None = None, optim_of: str | None = None) -> dict:
    """One training run; masks from each dataset's segment out unless ``mask_dirs`` says otherwise,
    optimiser settings from ``<optim_of or kind>.optim``."""
    from maskreid.train import train_model
    from maskreid.train.data import attach_images

    frame = attach_images(_train_frame(datasets), [IMAGES / d for d in datasets])
    if mask_dirs is None:
        mask_dirs = [MASKS / d for d in datasets]
    masks = _masks_for(mask_dirs)
    optim = dict(get(params, f"{optim_of or kind}.optim"))
    optim["seed"] = get(params, "seed")
    batch_size = optim.pop("batch_size")
    sampler = get(params, "sampler")
    sampler_cfg = {  # which batch each loss needs: plain shuffled, MaskReID 1 x P + N, or P x K
        "softmax": {"kind": "shuffle", "batch_size": batch_size},
        "rank": {"kind": "maskreid", "P": sampler["P"], "N": sampler["N"]},
        "npair": {"kind": "maskreid", "P": sampler["P"], "N": sampler["N"]},
        "triplet": {"kind": "pk", "P": sampler["pk_p"], "K": sampler["pk_k"]},
    }[loss]
    loss_cfg = dict(get(params, "loss"))
    out_dir = MODELS / kind / key
    size = (get(params, "input.height"), get(params, "input.width"))
    mask = get(params, "mask")
    summary = train_model(
        frame,
        masks,
        arch=run.get("arch") or _arch_of(init),
        loss_name=loss,
        loss_cfg=_loss_options(loss, loss_cfg),
        sampler_cfg=sampler_cfg,
        optim_cfg=optim,
        out_dir=out_dir,
        init_from=init,
        live_dir=Path("dvclive") / kind / key,
        data_cfg={"size": size, "mask_mode": mask["mode"], "mask_threshold": mask["threshold"]},
        model_cfg={"feat_dim": get(params, "model.feat_dim"), "width": get(params, "model.width")},
    )
    result = {
        "stage": f"{kind}@{key}",
        "datasets": datasets,
        "masks": [str(d) for d in mask_dirs],
        "loss": loss,
        "images": int(len(frame)),
        "identities": int(frame["label"].nunique()),
        **summary,
    }
    write_json(METRICS / "train" / f"{kind}_{key}.json", result)
    return result


def _loss_options(loss: str, cfg: dict) -> dict:
    """params.loss -> the chosen loss's own keyword arguments."""
    if loss == "rank":
        return {"alpha": cfg["alpha"], "lam": cfg["lambda"], "top_k": cfg.get("top_k")}
    if loss == "triplet":
        return {"margin": cfg["margin"]}
    return {}


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


def variant_cell(key: str, variant: dict) -> tuple[str, dict]:
    """The table cell (name, cell params) a mask variant's fine-tuned model is evaluated as."""
    return f"masks_{key}", {"model": f"finetune_variant/{key}", "dataset": variant["dataset"]}


def run_finetune_variant(key: str, params: dict) -> dict:
    """Fine-tune like ``finetune`` but with a mask variant's masks (``mask_variants.<key>``)."""
    v = get(params, f"mask_variants.{key}")
    init = MODELS / "pretrain" / v["init"] / "model.pt"
    return _train("finetune_variant", key, v, [v["dataset"]], v["loss"], init, params, mask_dirs=[MASK_VARIANTS / key],
                  optim_of="finetune")


# --------------------------------------------------------------------------- evaluation
def run_evaluate(key: str, params: dict) -> dict:
    """One table cell (``cells.<key>``): its model on its dataset's test protocol."""
    cell = get(params, f"cells.{key}")
    return _evaluate(key, cell, params, MASKS / cell["dataset"])


def run_evaluate_variant(key: str, params: dict) -> dict:
    """A mask variant's fine-tuned model on its dataset, with that variant's test masks."""
    name, cell = variant_cell(key, get(params, f"mask_variants.{key}"))
    return _evaluate(name, cell, params, MASK_VARIANTS / key)


def _evaluate(key: str, cell: dict, params: dict, mask_dir: Path) -> dict:
    """Features once (stored), every protocol of the dataset, with and without re-ranking."""
    import numpy as np
    import torch

    from maskreid.evaluate.features import extract_features, save_features
    from maskreid.evaluate.cell import evaluate_cell
    from maskreid.splits import read_manifest, read_meta
    from maskreid.train import load_model
    from maskreid.train.data import attach_images

    name = cell["dataset"]
    ecfg = dict(get(params, "evaluate"))
    manifest = read_manifest(SPLITS / name)
    meta = read_meta(SPLITS / name)
    test = manifest[manifest.role != "train"]
    images = test.drop_duplicates("image_id").reset_index(drop=True)
    frame = attach_images(images, [IMAGES / name])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model_path = MODELS / cell["model"] / "model.pt"
    model = load_model(model_path, device)
    info = getattr(model, "train_meta", {}) or {}
    masks = _masks_for([mask_dir]) if model.num_streams > 1 else None
    mask = get(params, "mask")
    feats = extract_features(
        model,
        frame,
        masks,
        size=(get(params, "input.height"), get(params, "input.width")),
        batch_size=ecfg.get("batch_size", 256),
        device=device,
        flip=ecfg.get("flip", False),
        mask_mode=mask["mode"],
        mask_threshold=mask["threshold"],
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
    seg = read_json(mask_dir / "meta.json") if model.num_streams > 1 and (mask_dir / "meta.json").exists() else {}
    train_info = info.get("train_summary", {})
    out = {
        "cell": key,
        "model": cell["model"],
        "dataset": name,
        "protocol": meta["protocol"],
        "setup": {
            "arch": model.arch,
            "pretrain_sets": _pretrain_sets(cell["model"], params),
            "mask_backend": seg.get("backend"),
            "ap_rule": ecfg["ap"],
            "subset": meta.get("subset"),
        },
        **results,
    }
    out["train_summary"] = {k: v for k, v in train_info.items() if isinstance(v, (int, float, str))}
    _ranklist(key, meta["protocol"], test, frame, feats, index)
    cmc = results.get("sq", {}).get("cmc") or []
    for r in results.values():  # the curve goes to reports/cmc (a plot), not into the metrics
        r.pop("cmc", None)
    write_json(METRICS / "cells" / f"{key}.json", out)
    write_json(REPORTS / "cmc" / f"{key}.json", [{"rank": i + 1, "cmc": float(np.round(c, 4))} for i, c in enumerate(cmc)])
    return out


def _ranklist(key: str, protocol: str, test, frame, feats, index) -> None:
    """reports/ranklists/<cell>.png: five fixed queries and their top 10 (trial 0)."""
    from maskreid.report.figures import ranklist_figure

    m = test[test.trial == 0]
    if protocol == "cuhk03_classic":
        return  # its galleries are drawn per repeat; no single rank list to show
    q, g = m[m.role == "query"], m[m.role == "gallery"]
    pos = lambda rows: [index[i] for i in rows.image_id]  # noqa: E731
    ranklist_figure(frame.iloc[pos(q)], frame.iloc[pos(g)], feats[pos(q)], feats[pos(g)],
                    REPORTS / "ranklists" / f"{key}.png")


def _pretrain_sets(model: str, params: dict) -> list[str]:
    kind, key = model.split("/", 1)
    if kind == "pretrain":
        return list(get(params, f"pretrain.runs.{key}.sets", []))
    runs = "mask_variants" if kind == "finetune_variant" else "finetune.runs"
    init = get(params, f"{runs}.{key}.init", None)
    return list(get(params, f"pretrain.runs.{init}.sets", [])) if init else []


# --------------------------------------------------------------------------- report
def run_report(_key: str, params: dict) -> dict:
    from maskreid.report import build_report, load_cells

    cells = load_cells(METRICS / "cells")
    variants = get(params, "mask_variants", {}) or {}
    cell_params = {**get(params, "cells"), **dict(variant_cell(k, v) for k, v in variants.items())}
    md, js = build_report(cell_params, cells, mask_table=get(params, "mask_table", {}) or {})
    write_text(REPORTS / "tables.md", md)
    write_json(REPORTS / "tables.json", js)
    return js
