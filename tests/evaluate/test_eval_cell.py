"""evaluate_cell on the Market protocol: every evaluation of Table 2, the multi-query + re-ranking
cell included, and the headline the evaluate stage tracks as the cell's metric."""

import numpy as np
import pandas as pd

from maskreid.evaluate.cell import evaluate_cell
from maskreid.evaluate.protocols import market_multi_query
from maskreid.pipeline.evaluate import headline


def _market(seed=0, ids=12, d=8):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(ids + 1, d))
    rows, feats = [], []
    for pid in range(1, ids + 1):
        for role, cam, n in (("query", 0, 1), ("gallery", 1, 3), ("multiquery", 0, 2)):
            for k in range(n):
                rows.append({"image_id": f"{role}/{pid}_{k}", "pid": pid, "camid": cam, "role": role, "trial": 0})
                feats.append(centre[pid] + rng.normal(scale=1.0, size=d))
    frame = pd.DataFrame(rows)
    return frame, np.asarray(feats, np.float32), {iid: i for i, iid in enumerate(frame.image_id)}


def test_market_cell_has_multi_query_rerank_equal_to_the_protocol():
    frame, feats, index = _market()
    rr = {"k1": 5, "k2": 2, "lambda": 0.3}
    out = evaluate_cell(frame, feats, index, "market", rerank=rr)
    assert set(out) == {"sq", "sq_rerank", "mq_mean", "mq_max", "mq_mean_rerank"}
    pick = lambda role: frame[frame.role == role]  # noqa: E731
    take = lambda rows: (feats[[index[i] for i in rows.image_id]], rows.pid.to_numpy(), rows.camid.to_numpy())  # noqa: E731
    q, g, mq = take(pick("query")), take(pick("gallery")), take(pick("multiquery"))
    ref = market_multi_query(q[0], g[0], q[1], g[1], q[2], g[2], *mq, pool="mean", rerank=True,
                             k1=5, k2=2, lambda_value=0.3)
    assert out["mq_mean_rerank"]["rank1"] == ref["rank1"] and out["mq_mean_rerank"]["mAP"] == ref["mAP"]
    assert out["mq_mean_rerank"]["rerank"] is True and out["mq_mean"]["rerank"] is False


def test_headline_keeps_rank1_and_map_single_query_first():
    res = {"mq_max": {"rank1": 1, "mAP": 2, "rank5": 3}, "sq": {"rank1": 4, "mAP": 5, "num_queries": 9},
           "sq_rerank": {"rank1": 6, "mAP": 7}}
    h = headline(res)
    assert list(h) == ["sq", "sq_rerank", "mq_max"]
    assert h["sq"] == {"rank1": 4, "mAP": 5}


def test_features_are_taken_at_the_size_the_model_trained_on():
    from types import SimpleNamespace

    from maskreid.pipeline.evaluate import trained_size

    params = {"input": {"height": 128, "width": 64}}
    assert trained_size(SimpleNamespace(train_meta={"input_size": [160, 80]}), params) == (160, 80)
    assert trained_size(SimpleNamespace(train_meta={"input_size": None}), params) == (128, 64)
    assert trained_size(SimpleNamespace(), params) == (128, 64)
