"""Mask quality report for one dataset's segment out: is the mask stream worth feeding the model?

Why: a segmenter that returns empty or full-frame masks on some crops silently turns the masked
stream into noise; the fg-fraction histogram and the empty/near-full counts catch that without any
reference, IoU against a reference (a dataset's gt_mask, or human-parsing label maps) measures it
when one exists, and pairwise IoU between backends shows how much the choice of backend matters.
The galleries are the paper's Fig. 2 (original / masked / mask) plus worst and median cases:
ordered by IoU where a reference exists, else by the mask's own confidence mean |2p - 1| (a crop
the segmenter is unsure about is where its mask is most likely wrong, e.g. on another camera network).
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from maskreid.store.masks import read_mask_meta, read_mask_table
from maskreid.store.shards import decode_image, decode_mask, read_frame

EMPTY_FG = 0.02
FULL_FG = 0.90
TILE = (64, 128)  # gallery tile (width, height)


def mask_iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """IoU of two boolean masks of one shape, every pixel pooled; two empty masks agree perfectly (1.0)."""
    if np.shape(pred) != np.shape(ref):
        raise ValueError(f"mask shapes differ: {np.shape(pred)} vs {np.shape(ref)}")
    return float(_iou(pred, ref, axis=None))


def per_crop_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of boolean masks per crop (N×H×W each); a crop where both are empty scores 1."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"per_crop_iou needs two N×H×W masks of one shape, got {pred.shape} and {gt.shape}")
    return _iou(pred, gt, axis=(1, 2))


def _iou(pred: np.ndarray, ref: np.ndarray, axis) -> np.ndarray:
    """The one IoU formula behind both: intersection over union summed over ``axis``, 1 where the union is empty."""
    inter = np.logical_and(pred, ref).sum(axis=axis)
    union = np.logical_or(pred, ref).sum(axis=axis)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def mask_confidence(mask: np.ndarray) -> float:
    """Mean |2p - 1| of a stored probability mask (uint8 0..255): 1 = every pixel decided, 0 = all at 0.5."""
    return float(np.abs(np.asarray(mask, np.float32) / 127.5 - 1.0).mean())


def parsing_reference(tar_path: str | Path, image_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Human-parsing label maps (label > 0 = person) from a tar such as market1501_parsing.tar.xz,
    keyed by the image_id whose file stem matches (all maps keyed by stem when ``image_ids`` is None)."""
    by_stem = None if image_ids is None else {Path(i).name.split(".")[0]: i for i in image_ids}
    out: dict[str, np.ndarray] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf:
            if not (m.isfile() and m.name.endswith(".png")):
                continue
            stem = Path(m.name).name[:-4]
            key = stem if by_stem is None else by_stem.get(stem)
            if key is not None:
                out[key] = decode_mask(tf.extractfile(m).read(), m.name) > 0
    return out


def _tile(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return cv2.resize(img, TILE, interpolation=cv2.INTER_AREA if img.shape[0] > TILE[1] else cv2.INTER_LINEAR)


def _save_rgb(path: Path, rows: list[list[np.ndarray]]) -> None:
    grid = np.concatenate([np.concatenate([_tile(t) for t in r], axis=1) for r in rows], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _histogram(path: Path, fg: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(fg, bins=50, range=(0, 1), color="#4477aa")
    for x in (EMPTY_FG, FULL_FG):
        ax.axvline(x, color="#cc3311", lw=1, ls="--")
    ax.set_xlabel("foreground fraction")
    ax.set_ylabel("crops")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x: np.ndarray, q: float) -> float:
    return round(float(np.percentile(x, q)), 4) if len(x) else float("nan")


def pairwise_iou(mask_dirs: Mapping[str, str | Path], threshold: float = 0.5, max_items: int = 2000,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean IoU between every two backends' masks on the images they share (a seeded sample)."""
    tables = {k: read_mask_table(d, ["sha256", "mask"]) for k, d in mask_dirs.items()}
    maps = {k: dict(zip(t.column("sha256").to_pylist(), t.column("mask").to_pylist())) for k, t in tables.items()}
    common = sorted(set.intersection(*(set(m) for m in maps.values()))) if maps else []
    if len(common) > max_items:
        common = sorted(np.random.default_rng(seed).choice(common, max_items, replace=False).tolist())
    cut = threshold * 255.0
    bins = {k: [decode_mask(m[s], s) >= cut for s in common] for k, m in maps.items()}
    names = list(maps)
    out: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            v = round(float(np.mean([mask_iou(x, y) for x, y in zip(bins[a], bins[b])])), 4) if common else float("nan")
            out[a][b] = out[b][a] = v
    return out


def quality_report(
    masks_dir: str | Path,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    compare: Mapping[str, str | Path] | None = None,
    threshold: float | None = None,
    sample: int = 8,
    seed: int = 0,
) -> dict:
    """Write fg_hist.png and galleries into ``out_dir``; return a flat-ish dict for metrics JSON.

    ``images_dir``: the image shards (for galleries, and for ``gt_mask`` as the reference when
    ``reference`` is None). ``reference``: image_id -> mask (nonzero = person), e.g. from
    :func:`parsing_reference`. ``compare``: other backends' segment outs for pairwise IoU.
    ``threshold`` defaults to the one in the out's meta.json.
    """
    meta = read_mask_meta(masks_dir)
    thr = float(meta["threshold"] if threshold is None else threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = read_mask_table(masks_dir).to_pandas().sort_values("image_id").reset_index(drop=True)
    masks = [decode_mask(b, i) for b, i in zip(t["mask"], t["image_id"])]
    fg = np.array([float((m >= thr * 255.0).mean()) for m in masks])
    conf = np.array([mask_confidence(m) for m in masks])
    report: dict = {
        "backend": meta["backend"], "fingerprint": meta["fingerprint"], "threshold": thr, "n": int(len(t)),
        "empty": int((fg < EMPTY_FG).sum()), "near_full": int((fg > FULL_FG).sum()),
        "fg_mean": round(float(fg.mean()), 4) if len(fg) else float("nan"),
        "fg_p10": _pct(fg, 10), "fg_p50": _pct(fg, 50), "fg_p90": _pct(fg, 90),
        "confidence_mean": round(float(conf.mean()), 4) if len(conf) else float("nan"), "confidence_p10": _pct(conf, 10),
    }
    _histogram(out_dir / "fg_hist.png", fg, f"{meta['backend']}: fg fraction at p>={thr} (n={len(t)})")
    figures = ["fg_hist.png"]

    images: dict[str, bytes] = {}
    if images_dir is not None:
        frame = read_frame(images_dir, ["image_id", "image", "gt_mask"])
        images = dict(zip(frame["image_id"], frame["image"]))
        if reference is None and frame["gt_mask"].notna().any():
            reference = {i: decode_mask(g, i) > 0 for i, g in zip(frame["image_id"], frame["gt_mask"]) if g is not None}

    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(t), min(sample, len(t)), replace=False).tolist()) if len(t) else []

    def rows_for(idx: list[int], ref: bool) -> list[list[np.ndarray]]:
        orig = [decode_image(images[t["image_id"][i]], t["image_id"][i]) for i in idx]
        rows = [orig, [(o * (masks[i][..., None] / 255.0)).astype(np.uint8) for o, i in zip(orig, idx)],
                [masks[i] for i in idx]]
        if ref:
            rows.insert(2, [(reference[t["image_id"][i]].astype(np.uint8) * 255) for i in idx])
        return rows

    if images and pick:
        _save_rgb(out_dir / "gallery.png", rows_for(pick, ref=False))
        figures.append("gallery.png")

    if reference:
        have = [i for i in range(len(t)) if t["image_id"][i] in reference]
        ious = np.array([mask_iou(masks[i] >= thr * 255.0, np.asarray(reference[t["image_id"][i]]) > 0) for i in have])
        report.update({"iou_n": len(have), "iou_mean": round(float(ious.mean()), 4) if len(have) else float("nan"),
                       "iou_p10": _pct(ious, 10)})
        score, with_ref, report["gallery_order"] = ious, True, "IoU against the reference"
    else:
        have, score, with_ref = list(range(len(t))), conf, False
        report["gallery_order"] = "mask confidence mean |2p-1| (no reference)"
    if images and len(have):
        order = np.argsort(score, kind="stable")
        k = min(sample, len(have))
        mid = max(0, len(have) // 2 - k // 2)
        for name, sel in (("gallery_worst.png", order[:k]), ("gallery_median.png", order[mid:mid + k])):
            _save_rgb(out_dir / name, rows_for([have[j] for j in sel], ref=with_ref))
            figures.append(name)
    if compare:
        report["pairwise_iou"] = pairwise_iou({meta["backend"]: masks_dir, **compare}, thr, seed=seed)
    report["figures"] = figures
    return report
