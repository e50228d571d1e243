"""CPU training throughput (img/s) of the MaskReID networks at 144x56 with the MaskReID batch.

Two numbers per arch:
  compute  — forward + ranking loss + backward + SGD step on ready tensors (the model's cost);
  pipeline — maskreid.train.fit end to end on in-memory synthetic 128x64 JPEG crops and masks
             (decode, resize, augmentation, masking in-process, num_workers=0) + the same step.

    python benchmarks/bench_train.py --threads 2 --steps 6 --warmup 2
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


def bench_compute(arch: str, P: int, N: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build_model(arch).train()
    loss_fn = build_loss("rank")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    b = P + N
    x = torch.randn(b, 3, *SIZE)
    masked = torch.randn(b, 3, *SIZE) if model.num_streams > 1 else None
    y = torch.tensor([0] * P + list(range(1, N + 1)))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss = loss_fn(model(x, masked).feat, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return b / float(np.mean(times))


def bench_pipeline(arch: str, P: int, N: int, steps: int, warmup: int, frame, masks) -> float:
    torch.manual_seed(0)
    model = build_model(arch)
    ds = ReIDDataset(frame, masks, size=SIZE, train=True, need_masked=model.num_streams > 1)
    sampler = MaskReIDSampler(frame["label"].to_numpy(), P=P, N=N, batches_per_epoch=warmup + steps)
    with tempfile.TemporaryDirectory() as d:
        # log_every=warmup: fit's img/s mean drops the first window (the warm-up steps)
        s = fit(model, build_loss("rank"), ds, sampler,
                {"max_steps": warmup + steps, "log_every": max(warmup, 1), "checkpoint_every": 0,
                 "progress": False, "lr": 0.01}, d)
    return s["img_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["maskreid_mf", "dgd"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("-P", type=int, default=10)
    ap.add_argument("-N", type=int, default=54)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    frame, masks = synthetic()
    for arch in args.archs:
        res = {
            "arch": arch, "size": list(SIZE), "batch": args.P + args.N, "threads": args.threads,
            "compute_img_per_s": round(bench_compute(arch, args.P, args.N, args.steps, args.warmup), 2),
            "pipeline_img_per_s": round(
                bench_pipeline(arch, args.P, args.N, args.steps, args.warmup, frame, masks), 2),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        }
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
