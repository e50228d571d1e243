"""IoU of mask sources against Market's human-parsing maps, on a trained segmenter's held-out ids.

Why: the segment stage scores its own backend (and ``segment.compare``) on these crops, but a mask
variant (an ensemble, a second segmenter) is made for another dataset and scored nowhere; issue 18
asks that Market's held-out figures hold (>= 0.85 mean / 0.70 p10) for every mask choice. All
sources are scored on the same crops: the identities the segmenter of ``--held-out-from`` never
trained on.

    python benchmarks/mask_quality.py --held-out-from models/segmenter/market_parsing_strong/segmenter.pt \\
        --source onnx:pose --source smp:models/segmenter/market_parsing_strong/segmenter.pt \\
        --source ensemble:pose+models/segmenter/market_parsing_strong/segmenter.pt
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from maskreid.segment.ensemble import build_mask_source
from maskreid.segment.parsing_data import load_pairs_from_shards
from maskreid.segment.quality import per_crop_iou
from maskreid.segment.seg_model import read_checkpoint
from maskreid.store.masks import prob_to_uint8


def source_cfg(spec: str) -> dict:
    """``onnx:<preset>`` | ``smp:<segmenter.pt>`` | ``ensemble:<preset>+<segmenter.pt>``."""
    kind, _, arg = spec.partition(":")
    if kind == "onnx":
        return {"backend": "onnx", "preset": arg}
    if kind == "smp":
        return {"backend": "smp", "path": arg}
    if kind == "ensemble":
        preset, _, path = arg.partition("+")
        return {"backend": "ensemble", "members": [{"backend": "smp", "path": path}, {"backend": "onnx", "preset": preset}]}
    raise SystemExit(f"--source {spec!r}: expected onnx:<preset>, smp:<path> or ensemble:<preset>+<path>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--held-out-from", required=True, help="segmenter.pt whose held-out identities are scored")
    ap.add_argument("--source", action="append", required=True)
    ap.add_argument("--shards", default="data/images/market1501")
    ap.add_argument("--parsing", default="../shared/data/reid/market1501_parsing.tar.xz")
    ap.add_argument("--threshold", type=float, default=0.5)
    a = ap.parse_args()
    val = {int(p) for p in read_checkpoint(a.held_out_from)["train_summary"]["val_pids"]}
    pairs = load_pairs_from_shards(a.shards, a.parsing)
    pairs = pairs.subset(np.flatnonzero(np.isin(pairs.pids, sorted(val))))
    ref = pairs.labels > 0
    rows = []
    for spec in a.source:
        seg = build_mask_source(source_cfg(spec))
        t0 = time.perf_counter()
        # stored as the segment stage stores them (8-bit) and cut as the re-ID data cuts them
        masks = np.stack([prob_to_uint8(p) for p in seg.predict(list(pairs.images))])
        iou = per_crop_iou(masks >= a.threshold * 255.0, ref)
        rows.append({"source": spec, "crops": len(iou), "ids": len(val), "iou_mean": round(float(iou.mean()), 4),
                     "iou_p10": round(float(np.percentile(iou, 10)), 4), "iou_median": round(float(np.median(iou)), 4),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
