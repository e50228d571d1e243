"""Stages train_segmenter, segment and segment_variant: crops -> person masks (data/masks/<name>)
+ their quality report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskreid.config import get
from maskreid.io import write_json
from maskreid.pipeline import IMAGES, MASK_CACHE, MASKS, METRICS, MODELS, REPORTS, SPLITS

def run_train_segmenter(key: str, params: dict) -> dict:
    """Real parsing masks -> a person segmenter for re-ID crops (checkpoint + ONNX) + its metrics."""
    from dvclive import Live

    from maskreid.segment.trainer import STATE_NAME, train_segmenter

    cfg = dict(get(params, f"segmenter.runs.{key}"))
    cfg["parsing_tar"] = cfg.pop("parsing_source")
    cfg["market_tar"] = cfg.pop("images_source")
    out_dir = MODELS / "segmenter" / key
    # resume=True keeps the curve of a killed run; train_segmenter drops the rows past its checkpoint
    with Live(str(Path("dvclive") / "segmenter" / key), dvcyaml=False, save_dvc_exp=False,
              resume=(out_dir / STATE_NAME).exists()) as live:
        summary = train_segmenter(cfg, out_dir, live=live)
    write_json(METRICS / "segmenter" / f"{key}.json", {"run": key, **summary})
    return summary


# --------------------------------------------------------------------------- segmentation
VARIANT_KEYS = ("backend", "network", "checkpoint")  # what a mask variant sets of ``segment`` (omitted: null)

def _segmenter_cfg(cfg: dict) -> dict:
    """params.segment -> build_mask_source's dict (backend + that backend's own params): ``network``
    names a torchvision model or an ONNX preset, ``checkpoint`` is a trained smp segmenter's file
    (check_params has refused a backend given the other key). ``ensemble`` reads both: the mean of
    the smp segmenter and the ONNX preset."""
    backend = cfg["backend"]
    out: dict[str, Any] = {"backend": backend}
    if backend == "torchvision":
        out.update(model=cfg["network"], size=list(cfg.get("working_size", [256, 128])), batch_size=cfg.get("batch_size", 64))
    elif backend == "smp":
        out.update(path=cfg["checkpoint"], runtime=cfg.get("runtime", "auto"))
    elif backend == "onnx":
        out.update(preset=cfg["network"])
    elif backend == "ensemble":
        out["members"] = [_segmenter_cfg({**cfg, "backend": "smp"}), _segmenter_cfg({**cfg, "backend": "onnx"})]
    return out


def _segmenter_held_out(cfg: dict) -> set[int] | None:
    """Identities a trained smp segmenter never trained on (from its checkpoint), else None."""
    if cfg.get("backend") not in ("smp", "ensemble"):
        return None
    from maskreid.segment.seg_model import read_checkpoint

    ckpt = read_checkpoint(cfg["checkpoint"])
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
    from maskreid.segment.ensemble import build_mask_source
    from maskreid.segment.quality import parsing_reference, quality_report
    from maskreid.segment.run import segment_dataset
    from maskreid.segment.torchvision_seg import WeightsUnavailableError
    from maskreid.store.shards import decode_image, read_frame, write_shards

    cfg = dict(get(params, "segment"))
    threshold = get(params, "mask.threshold")
    report_dir = REPORTS / "segmentation" / name
    stats = segment_dataset(
        IMAGES / name, MASKS / name, build_mask_source(_segmenter_cfg(cfg), MASK_CACHE), cache_dir=MASK_CACHE,
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


def run_segment_variant(key: str, params: dict) -> dict:
    """``data/masks/<key>``: one dataset's split images (train and test, every trial) segmented by
    another backend (``mask_variants.<key>``: dataset, and the ``segment`` keys backend, network,
    checkpoint, depends_on), for the runs and cells whose ``masks`` name it.

    Why: what masks do to re-ID is measured by training and evaluating the same model with each
    backend's masks; only the images the protocol uses need them, which keeps slow backends
    (GrabCut, ~30 crops/s) affordable on a subset.
    """
    from maskreid.segment.ensemble import build_mask_source
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
    # the profile's segment settings (working size, runtime, batch) with the variant's backend
    cfg = {**get(params, "segment"), **{k: v.get(k) for k in VARIANT_KEYS}}
    stats = segment_dataset(images_dir, MASKS / key, build_mask_source(_segmenter_cfg(cfg), MASK_CACHE),
                            cache_dir=MASK_CACHE, batch_size=cfg.get("batch_size", 64), threshold=threshold)
    quality = quality_report(MASKS / key, REPORTS / "segmentation" / "variants" / key, images_dir=images_dir,
                             reference={}, threshold=threshold)
    out = {"variant": key, "dataset": name, **{k: v.get(k) for k in VARIANT_KEYS}, "run": stats,
           "quality": quality}
    write_json(METRICS / "segmentation" / "variants" / f"{key}.json", out)
    return out

