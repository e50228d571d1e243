"""CPU training throughput (img/s) of the MaskReID networks at 144x56 with the MaskReID batch.

Two numbers per arch:
  compute  — forward + ranking loss + backward + SGD step on ready tensors (the model's cost);
  pipeline — maskreid.train.fit end to end on in-memory synthetic 128x64 JPEG crops and masks
             (decode, resize, augmentation, masking in-process, num_workers=0) + the same step.

    python benchmarks/bench_train.py --threads 2 --steps 6 --warmup 2
    python benchmarks/bench_train.py --size 72 28 --width 0.25     # the demo / real_cpu_subset network
    python benchmarks/bench_train.py --amp bf16                     # on a GPU
    python benchmarks/bench_train.py --archs mnv2_mf mnv2 --size 128 64 --last-stride 2 \
        --channels-last --arrays                                    # the real_cpu trunk and data path
    ... --amp-cpu                                                   # bf16 autocast on the CPU
    ... --compile                                                   # torch.compile (compute only)
    ... --arrays --frozen-blocks 4 --cached-prefix                  # the frozen prefix computed once

``--cached-prefix``: the pipeline number trains on ``PrefixFeatureDataset``'s cached features (the
one-off cost of computing them is printed apart, as ``prefix_cache_s``).

``--arrays``: the pipeline number goes through ``ArrayDataset`` (crops decoded once, batch
augmentation) instead of per-image decoding.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import cv2
import numpy as np
import pandas as pd
import torch

from maskreid.losses import build_loss
from maskreid.models import build_model
from maskreid.samplers import MaskReIDSampler
from maskreid.store.shards import encode_png, sha256_bytes
from maskreid.train.arrays import ArrayDataset
from maskreid.train.prefix_cache import FromPrefix, PrefixFeatureDataset
from maskreid.train.data import ReIDDataset
from maskreid.train.loop import fit

SIZE = (144, 56)


def synthetic(n_ids: int = 80, per_id: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, masks = [], {}
    for pid in range(n_ids):
        for j in range(per_id):
            img = rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)
            ok, buf = cv2.imencode(".jpg", img)
            b = buf.tobytes()
            s = sha256_bytes(b)
            masks[s] = encode_png((rng.random((128, 64)) > 0.5).astype(np.uint8) * 255)
            rows.append({"image": b, "image_id": f"bench/{pid}_{j}", "sha256": s, "label": pid})
    return pd.DataFrame(rows), masks


def _model(arch: str, width: float, last_stride: int, frozen_blocks: int = 0):
    trunk = {"last_stride": last_stride, "frozen_blocks": frozen_blocks} if arch.startswith("mnv2") else {}
    return build_model(arch, width=width, **trunk)


def bench_compute(arch: str, P: int, N: int, steps: int, warmup: int, width: float = 1.0, amp: str = "none",
                  last_stride: int = 1, channels_last: bool = False, amp_cpu: bool = False,
                  frozen_blocks: int = 0, compile_model: bool = False) -> float:
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model(arch, width, last_stride, frozen_blocks).train().to(dev)
    cl = dev == "cuda" or channels_last
    if cl:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_model else model
    loss_fn = build_loss("rank")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    b = P + N
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(b, 3, *SIZE, device=dev).contiguous(memory_format=fmt)
    masked = torch.randn(b, 3, *SIZE, device=dev).contiguous(memory_format=fmt) if model.num_streams > 1 else None
    if dev == "cpu" and amp_cpu:
        amp = "bf16"
    y = torch.tensor([0] * P + list(range(1, N + 1)), device=dev)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    times = []
    for i in range(warmup + steps):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(dev, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(step_model(x, masked).feat, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return b / float(np.mean(times))


def bench_pipeline(arch: str, P: int, N: int, steps: int, warmup: int, frame, masks, width: float = 1.0,
                   last_stride: int = 1, channels_last: bool = False, amp_cpu: bool = False,
                   arrays: bool = False, frozen_blocks: int = 0, cached_prefix: bool = False) -> tuple[float, float]:
    torch.manual_seed(0)
    model = _model(arch, width, last_stride, frozen_blocks)
    kind = ArrayDataset if arrays or cached_prefix else ReIDDataset
    ds = kind(frame, masks, size=SIZE, train=True, need_masked=model.num_streams > 1)
    cache_s = 0.0
    if cached_prefix:
        t = time.perf_counter()
        ds, model = PrefixFeatureDataset(ds, model), FromPrefix(model)
        cache_s = time.perf_counter() - t
    sampler = MaskReIDSampler(frame["label"].to_numpy(), P=P, N=N, batches_per_epoch=warmup + steps)
    with tempfile.TemporaryDirectory() as d:
        # log_every=warmup: fit's img/s mean drops the first window (the warm-up steps)
        s = fit(model, build_loss("rank"), ds, sampler,
                {"max_steps": warmup + steps, "log_every": max(warmup, 1), "checkpoint_every": 0,
                 "progress": False, "lr": 0.01, "channels_last_cpu": channels_last, "amp_cpu": amp_cpu}, d)
    return s["img_per_s"], cache_s


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["maskreid_mf", "dgd"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("-P", type=int, default=10)
    ap.add_argument("-N", type=int, default=54)
    ap.add_argument("--size", type=int, nargs=2, default=list(SIZE), metavar=("H", "W"))
    ap.add_argument("--width", type=float, default=1.0, help="DGD trunk width multiplier")
    ap.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="autocast (CUDA only)")
    ap.add_argument("--amp-cpu", action="store_true", help="bf16 autocast on the CPU")
    ap.add_argument("--channels-last", action="store_true", help="channels-last on the CPU too")
    ap.add_argument("--last-stride", type=int, default=1, help="mnv2 archs")
    ap.add_argument("--arrays", action="store_true", help="pipeline through ArrayDataset")
    ap.add_argument("--frozen-blocks", type=int, default=0, help="mnv2 archs: first N feature modules frozen")
    ap.add_argument("--cached-prefix", action="store_true", help="pipeline on the cached frozen prefix")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model for the compute number (the pipeline number stays eager)")
    args = ap.parse_args()
    SIZE = tuple(args.size)
    torch.set_num_threads(args.threads)
    frame, masks = synthetic()
    for arch in args.archs:
        res = {
            "arch": arch, "size": list(SIZE), "width": args.width, "batch": args.P + args.N,
            "threads": args.threads, "amp": args.amp, "amp_cpu": args.amp_cpu,
            "channels_last": args.channels_last, "last_stride": args.last_stride, "arrays": args.arrays,
            "frozen_blocks": args.frozen_blocks, "compile": args.compile,
            "compute_img_per_s": round(bench_compute(arch, args.P, args.N, args.steps, args.warmup, args.width,
                                                     args.amp, args.last_stride, args.channels_last,
                                                     args.amp_cpu, args.frozen_blocks, args.compile), 2),
        }
        pipeline, cache_s = bench_pipeline(arch, args.P, args.N, args.steps, args.warmup, frame, masks, args.width,
                                           args.last_stride, args.channels_last, args.amp_cpu, args.arrays,
                                           args.frozen_blocks, args.cached_prefix)
        res |= {
            "cached_prefix": args.cached_prefix, "pipeline_img_per_s": round(pipeline, 2),
            "prefix_cache_s": round(cache_s, 2), "images": len(frame),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        }
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
