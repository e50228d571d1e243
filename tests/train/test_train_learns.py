"""The real network, the MaskReID ranking loss and the 1 x P + N sampler, trained together on a
tiny synthetic set, learn: rank-1 on held-out identities beats the untrained model clearly."""

import numpy as np
import pandas as pd
import torch

from maskreid.datasets import synthetic
from maskreid.evaluate import evaluate
from maskreid.evaluate.features import extract_features
from maskreid.train import load_model, train_model

SIZE = (72, 28)


def _rank1(model, frame, masks) -> float:
    q, g = frame[frame.split == "query"], frame[frame.split == "gallery"]
    fq = extract_features(model, q, masks, size=SIZE, device="cpu")
    fg = extract_features(model, g, masks, size=SIZE, device="cpu")
    dist = torch.cdist(torch.from_numpy(fq), torch.from_numpy(fg))
    cmc, _ = evaluate(dist, q.pid.to_numpy(), g.pid.to_numpy(), q.camid.to_numpy(), g.camid.to_numpy())
    return float(cmc[0]) * 100


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
    before = _rank1(load_model(tmp_path / "untrained" / "model.pt", "cpu"), test, masks)
    after = _rank1(load_model(tmp_path / "trained" / "model.pt", "cpu"), test, masks)
    assert after >= before + 15, (before, after)
    assert np.isfinite(after)
