"""Segmentation backends: crops/s and peak memory on CPU on real 128x64 crops, and IoU vs Market parsing.

Usage (from the repo root):
    python benchmarks/bench_segment.py [--n-iou 500] [--n-speed 64] [--batch 16] [--threads 1] [--write-docs]

Each backend runs in its own subprocess so its peak RSS (ru_maxrss, imports included) is its own.
Crops: a fixed seeded sample of real Market-1501 train crops (128x64) with human-parsing label maps
(label > 0 = person) from ../shared/data/reid. Threshold 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BACKENDS = {
    "onnx:pose": {"backend": "onnx", "preset": "pose"},
    "onnx:deeplab_voc": {"backend": "onnx", "preset": "deeplab_voc"},
    "onnx:bodypix": {"backend": "onnx", "preset": "bodypix"},
    "grabcut": {"backend": "grabcut"},
    # random weights: speed only (no pretrained weights offline), IoU meaningless
    "torchvision:fcn_resnet101(random)": {"backend": "torchvision", "model": "fcn_resnet101", "weights": None,
                                          "size": [256, 128]},
    "torchvision:lraspp_mbv3(random)": {"backend": "torchvision", "model": "lraspp_mobilenet_v3_large",
                                        "weights": None, "size": [256, 128]},
}


def market_sample(n: int, seed: int = 0):
    sys.path.insert(0, str(REPO))
    from tests.segment.test_seg_onnx import market_sample as ms

    return ms(n, seed)


def run_one(name: str, n_iou: int, n_speed: int, batch: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from maskreid.segment.base import build_segmenter
    from maskreid.segment.quality import mask_iou

    cfg = dict(BACKENDS[name])
    if cfg["backend"] == "onnx":
        cfg["intra_op_num_threads"] = threads
    images, refs = market_sample(max(n_iou, n_speed))
    seg = build_segmenter(cfg)
    speed_imgs = images[:n_speed]
    seg.predict(speed_imgs[:2])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(speed_imgs), batch):
        seg.predict(speed_imgs[i:i + batch])
    dt = time.perf_counter() - t
    res = {"backend": name, "crops_per_s": round(len(speed_imgs) / dt, 1), "n_speed": len(speed_imgs)}
    if "random" not in name:
        probs = []
        for i in range(0, n_iou, batch):
            probs += seg.predict(images[i:i + batch])
        ious = np.array([mask_iou(p >= 0.5, r) for p, r in zip(probs, refs[:n_iou])])
        fg = np.array([(p >= 0.5).mean() for p in probs])
        res.update(n_iou=n_iou, iou_mean=round(float(ious.mean()), 3), iou_p10=round(float(np.percentile(ious, 10)), 3),
                   fg_mean=round(float(fg.mean()), 3), empty=int((fg < 0.02).sum()))
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def write_docs(results: list[dict], args, cmd: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {platform.python_version()}, no GPU"
    lines = ["## Segmentation", "",
             f"Command: `{cmd}`  ", f"Machine: {machine}; torch/onnxruntime threads = {args.threads}; "
             f"batch {args.batch}; speed on {args.n_speed} real Market 128x64 crops; IoU vs Market human parsing "
             f"(label>0) on a fixed seeded sample of {args.n_iou} train crops, masks thresholded at 0.5.", "",
             "| backend | crops/s (CPU) | peak RSS MB | IoU mean | IoU p10 | fg mean | empty (<2%) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['backend']} | {r['crops_per_s']} | {r['peak_rss_mb']} | {r.get('iou_mean', '-')} | "
                     f"{r.get('iou_p10', '-')} | {r.get('fg_mean', '-')} | {r.get('empty', '-')} |")
    lines += ["", "Reference parsing masks have mean fg 0.46. `(random)` rows use random weights (no pretrained "
              "torchvision weights offline): speed only. The shipped onnx models have a fixed batch of 1 and run "
              "item by item. Peak RSS is the whole benchmark process (torch import and the decoded crop sample included). Throughput was measured while other jobs shared the 2 cores.", ""]
    section = "\n".join(lines)
    if "## Segmentation" in text:
        text = re.sub(r"## Segmentation\n.*?(?=\n## |\Z)", section.rstrip("\n") + "\n", text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-iou", type=int, default=500)
    ap.add_argument("--n-speed", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", nargs="*", default=list(BACKENDS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n_iou, args.n_speed, args.batch, args.threads)))
        return
    results = []
    for name in args.backends:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--n-iou", str(args.n_iou), "--n-speed",
                              str(args.n_speed), "--batch", str(args.batch), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True, cwd=REPO)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.write_docs:
        cmd = "python benchmarks/bench_segment.py " + " ".join(a for a in sys.argv[1:])
        write_docs(results, args, cmd.strip())


if __name__ == "__main__":
    main()
