"""DDP on CPU: torchrun with 2 gloo processes ends with identical weights on both ranks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SCRIPT = textwrap.dedent(
    """
    import sys
    from collections import namedtuple
    import numpy as np, pandas as pd, torch
    from torch import nn
    from maskreid.store.shards import encode_png, sha256_bytes
    from maskreid.train import distributed
    from maskreid.train.data import ReIDDataset, ShuffledBatchSampler
    from maskreid.train.loop import fit

    torch.set_num_threads(1)
    Out = namedtuple("Out", "feat logits")

    class Tiny(nn.Module):
        num_streams = 1
        def __init__(self):
            super().__init__()
            self.c = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.BatchNorm2d(4), nn.ReLU())
            self.fc = nn.Linear(4, 3)
        def forward(self, x, masked=None):
            f = self.c(x).mean((2, 3))
            return Out(f, self.fc(f))

    out = sys.argv[1]
    info = distributed.init_distributed()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        b = encode_png(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8))
        rows.append({"image": b, "image_id": f"s/{i}", "sha256": sha256_bytes(b), "label": i % 3})
    ds = ReIDDataset(pd.DataFrame(rows), None, size=(16, 8), train=True)
    sampler = ShuffledBatchSampler(len(ds), 4, seed=0, rank=info.rank, world_size=info.world_size)
    torch.manual_seed(100 + info.rank)  # different init per rank: DDP must broadcast rank 0's
    model = Tiny()
    s = fit(model, nn.CrossEntropyLoss(), ds, sampler,
            {"max_steps": 5, "lr": 0.1, "progress": False, "loss_input": "logits",
             "checkpoint_every": 2}, out)
    torch.save({"state": model.state_dict(), "summary": s, "first": next(iter(sampler))},
               f"{out}/rank{info.rank}.pt")
    distributed.cleanup()
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_end_identical(tmp_path):
    script = tmp_path / "ddp_job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["summary"]["world_size"] == 2 and r0["summary"]["steps"] == 5
    assert set(r0["first"]).isdisjoint(r1["first"])  # each rank saw its own shard of the data
    for k, v in r0["state"].items():
        torch.testing.assert_close(v, r1["state"][k], rtol=0, atol=0, msg=k)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 5
    assert sorted(p.name for p in Path(tmp_path).glob("*.pt")) == ["checkpoint.pt", "rank0.pt", "rank1.pt"]
