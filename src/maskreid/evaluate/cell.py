"""One table cell: a dataset's test protocol applied to features extracted once.

The evaluate stage extracts features for every test image a protocol needs, then this module
slices them by the manifest (trial x role) and runs each evaluation the protocol has: single
query with and without re-ranking, multi-query (mean / max pooling, and mean + re-ranking) where
the dataset has a multi-query set, single-shot trials for the small sets, CUHK03's classic single-gallery-shot.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from maskreid.evaluate.protocols import (
    cuhk03_classic,
    market_multi_query,
    market_single_query,
    mean_results,
    single_shot_trials,
)


def _take(rows: pd.DataFrame, feats: np.ndarray, index: Mapping[str, int]):
    idx = np.fromiter((index[i] for i in rows.image_id), np.int64, len(rows))
    return feats[idx], rows.pid.to_numpy(np.int64), rows.camid.to_numpy(np.int64)


def evaluate_cell(
    manifest: pd.DataFrame,
    feats: np.ndarray,
    index: Mapping[str, int],
    protocol: str,
    ap: str = "market",
    rerank: Mapping | None = None,
    max_rank: int = 50,
    trials: list[int] | None = None,
) -> dict:
    """Results keyed by evaluation (``sq``, ``sq_rerank``, ``mq_mean``, ``mq_max``,
    ``mq_mean_rerank``), each a dict of
    percentages (rank1/5/10, mAP, cmc) with query counts. ``manifest``: the test rows (any role but
    train); ``index``: image_id -> row of ``feats``."""
    rr = dict(rerank or {})
    rr_args = {"k1": rr.get("k1", 20), "k2": rr.get("k2", 6), "lambda_value": rr.get("lambda", 0.3)}
    out: dict[str, dict] = {}
    if protocol == "market":
        m = manifest[manifest.trial == 0]
        q = _take(m[m.role == "query"], feats, index)
        g = _take(m[m.role == "gallery"], feats, index)
        args = (q[0], g[0], q[1], g[1], q[2], g[2])
        out["sq"] = market_single_query(*args, ap=ap, max_rank=max_rank)
        out["sq_rerank"] = market_single_query(*args, rerank=True, ap=ap, max_rank=max_rank, **rr_args)
        mq_rows = m[m.role == "multiquery"]
        if len(mq_rows):
            mq = _take(mq_rows, feats, index)
            for pool in ("mean", "max"):
                out[f"mq_{pool}"] = market_multi_query(*args, *mq, pool=pool, ap=ap, max_rank=max_rank)
            # Table 2's last cell: mean-pooled multi-query, then k-reciprocal re-ranking
            out["mq_mean_rerank"] = market_multi_query(*args, *mq, pool="mean", rerank=True, ap=ap,
                                                       max_rank=max_rank, **rr_args)
    elif protocol == "single_shot":
        chosen = trials if trials is not None else [0]
        per_trial = []
        for t in chosen:
            m = manifest[manifest.trial == t]
            q = _take(m[m.role == "query"], feats, index)
            g = _take(m[m.role == "gallery"], feats, index)
            per_trial.append((q[0], g[0], q[1], g[1]))
        out["sq"] = single_shot_trials(per_trial, ap=ap, max_rank=max_rank)
        out["sq"]["trials"] = list(chosen)
    elif protocol == "cuhk03_classic":
        chosen = trials if trials is not None else [0]
        res = []
        for t in chosen:
            m = manifest[(manifest.trial == t) & (manifest.role == "test")]
            f, p, c = _take(m, feats, index)
            # cameras: camid = 2 * (pair - 1) + view, view 0 probes / view 1 gallery
            view = c % 2
            res.append(cuhk03_classic(f[view == 0], f[view == 1], p[view == 0], p[view == 1],
                                      c[view == 0], c[view == 1], ap=ap, max_rank=max_rank, seed=t))
        out["sq"] = mean_results(res)
        out["sq"]["trials"] = list(chosen)
    else:
        raise ValueError(f"unknown protocol {protocol!r}: expected market, single_shot or cuhk03_classic")
    return out
