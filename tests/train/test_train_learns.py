"""The real network, the MaskReID ranking loss and the 1 x P + N sampler, trained together on a
tiny synthetic set, learn: mAP on held-out identities beats the untrained model clearly."""

import numpy as np
import pandas as pd
import torch

from maskreid.datasets import synthetic
from maskreid.evaluate import evaluate
from maskreid.evaluate.features import extract_features
from maskreid.train import load_model, train_model

SIZE = (72, 28)


def _rank1_map(model, frame, masks) -> tuple[float, float]:
    q, g = frame[frame.split == "query"], frame[frame.split == "gallery"]
    fq = extract_features(model, q, masks, size=SIZE, device="cpu")
    fg = extract_features(model, g, masks, size=SIZE, device="cpu")
    dist = torch.cdist(torch.from_numpy(fq), torch.from_numpy(fg))
    cmc, mAP = evaluate(dist, q.pid.to_numpy(), g.pid.to_numpy(), q.camid.to_numpy(), g.camid.to_numpy())
    return float(cmc[0]) * 100, float(mAP) * 100


def test_ranking_loss_training_beats_the_untrained_model(tmp_path):
    rows = list(synthetic.iter_rows(num_ids=48, num_cams=2, images_per_id_per_cam=3, seed=5))
    frame = pd.DataFrame(rows)
    masks = {r["sha256"]: r["gt_mask"] for r in rows}
    train = frame[(frame.split == "train") & (frame.pid > 0)].reset_index(drop=True)
    test = frame[frame.split.isin(["query", "gallery"])].reset_index(drop=True)
    common = dict(data_cfg={"size": SIZE}, model_cfg={"width": 0.25})
    opt = {"max_steps": 0, "progress": False, "seed": 0}
    train_model(train, masks, "maskreid_mf", "rank", {"top_k": 5}, {"P": 4, "N": 8}, {**opt, "max_steps": 1, "lr": 0.0},
                tmp_path / "untrained", **common)
    # lr 0.02: at 0.05 this tiny net sat at the edge of stability, and on one machine's numerics
    # (2026-12-03, AMD EPYC) seed 0 fell to 27-44 rank-1 after 200-300 steps; at 0.02 seeds 0-2
    # reach 73, 73, 92 there (untrained: 46)
    train_model(train, masks, "maskreid_mf", "rank", {"top_k": 5}, {"P": 4, "N": 8},
                {**opt, "max_steps": 300, "lr": 0.02, "warmup_steps": 10}, tmp_path / "trained", **common)
    # mAP, not rank-1: with 48 queries rank-1 moves in steps of 2.1 and varies with the machine's
    # numerics (2026-12-04, AVX-512 Xeon, 1 thread: untrained 45.8 / 34.2 rank-1 / mAP; seeds 0-2
    # trained 58.3 / 60.3, 75.0 / 68.6, 93.8 / 85.1), so a rank-1 margin of 15 failed there for
    # seed 0 while mAP gained 26 points
    before = _rank1_map(load_model(tmp_path / "untrained" / "model.pt", "cpu"), test, masks)
    after = _rank1_map(load_model(tmp_path / "trained" / "model.pt", "cpu"), test, masks)
    assert after[1] >= before[1] + 15 and after[0] > before[0], (before, after)
    assert np.isfinite(after).all()
