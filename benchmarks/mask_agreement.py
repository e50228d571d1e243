"""How far two mask sources agree, crop by crop: per-crop IoU between two segment outs.

Why: on a dataset without human-parsing references (DukeMTMC-reID here) the masks cannot be
scored, but the spread of agreement between two backends says where they differ and how often
(issue 18). Prints mean, 10th percentile and median IoU over the crops both folders hold, and the
share of crops below 0.5 (one of the two has missed most of the person).

    python benchmarks/mask_agreement.py data/masks/dukemtmc_reid data/masks/dukemtmc_reid_seg
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from maskreid.segment.quality import mask_iou
from maskreid.store.masks import load_masks
from maskreid.store.shards import decode_mask


def agreement(dir_a: str, dir_b: str, threshold: float = 0.5, sample: int | None = None, seed: int = 0) -> dict:
    a, b = load_masks(dir_a), load_masks(dir_b)
    common = sorted(set(a) & set(b))
    if sample and len(common) > sample:
        common = sorted(np.random.default_rng(seed).choice(common, sample, replace=False).tolist())
    cut = threshold * 255.0
    iou = np.array([mask_iou(decode_mask(a[s], s) >= cut, decode_mask(b[s], s) >= cut) for s in common])
    return {"a": dir_a, "b": dir_b, "crops": len(common), "threshold": threshold,
            "iou_mean": round(float(iou.mean()), 4), "iou_p10": round(float(np.percentile(iou, 10)), 4),
            "iou_median": round(float(np.median(iou)), 4), "below_0.5": round(float((iou < 0.5).mean()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--sample", type=int, help="a seeded sample of the shared crops (default: all)")
    a = ap.parse_args()
    print(json.dumps(agreement(a.a, a.b, a.threshold, a.sample)))


if __name__ == "__main__":
    main()
