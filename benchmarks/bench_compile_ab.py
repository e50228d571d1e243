"""Does ``torch.compile`` speed up the headline fine-tuning step on this CPU? Eager and compiled, interleaved.

The headline recipe's step (``mnv2``, first 4 modules frozen, last stride 2, channels-last, P x K = 16 x 4,
ranking loss + label-smoothed CE, Adam) on ready tensors. The compiled wrapper shares the eager model's
parameters, and the two alternate step by step, so a shared machine's drifting speed falls on both
alike (``bench_train.py --compile`` runs them one after the other and varied by ±20 % here). Prints
the medians' img/s and their ratio.

    python benchmarks/bench_compile_ab.py --size 160 80 --pairs 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from maskreid.losses import build_loss
from maskreid.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=[160, 80], metavar=("H", "W"))
    ap.add_argument("--pairs", type=int, default=30, help="timed eager + compiled step pairs")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = build_model("mnv2", num_classes=751, last_stride=2, frozen_blocks=4).train()
    model = model.to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    loss_fn = build_loss("rank")
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(64, 3, *args.size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(16).repeat_interleave(4)

    def step(m) -> float:
        t = time.perf_counter()
        out = m(x, None)
        loss = loss_fn(out.feat.float(), y) + F.cross_entropy(out.logits.float(), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    step(compiled), step(compiled), step(model)  # compilation and warm-up, untimed
    print(f"compilation + warm-up {time.perf_counter() - t0:.0f} s")
    eager, comp = [], []
    for _ in range(args.pairs):
        eager.append(step(model))
        comp.append(step(compiled))
    e, c = float(np.median(eager)), float(np.median(comp))
    print(f"{args.size[0]}x{args.size[1]}: eager {64 / e:.1f} img/s, compiled {64 / c:.1f} img/s, "
          f"compiled / eager speed {e / c:.2f}")


if __name__ == "__main__":
    main()
