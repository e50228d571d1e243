"""Evaluation protocols of PROTOCOL.md: features in, a dict of percentages out.

Every function returns ``{"rank1", "rank5", "rank10", "mAP"}`` in percent plus
``"num_queries"`` (queries given), ``"num_skipped"`` (queries without a valid match, left out),
``"ap_rule"`` and ``"cmc"`` (percent, ranks 1..max_rank) so that a metrics JSON always says how
it was computed. Distances are plain Euclidean on L2-normalised features (``distance.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .distance import as_tensor, euclidean_distance
from .metrics import evaluate_detailed
from .rerank import k_reciprocal_from_features

__all__ = [
    "market_single_query",
    "market_multi_query",
    "single_shot_trials",
    "cuhk03_classic",
    "mean_results",
    "pool_multi_query",
]

_RANKS = (1, 5, 10)


def _result(cmc: np.ndarray, mAP: float, num_queries: int, num_skipped: int, ap: str) -> dict:
    out = {f"rank{k}": float(100.0 * cmc[k - 1]) if k <= len(cmc) else float("nan") for k in _RANKS}
    out.update(
        mAP=float(100.0 * mAP),
        num_queries=int(num_queries),
        num_skipped=int(num_skipped),
        ap_rule=ap,
        cmc=[float(100.0 * c) for c in cmc],
    )
    return out


def _distances(qf, gf, rerank: bool, k1: int, k2: int, lambda_value: float) -> torch.Tensor:
    if not rerank:
        return euclidean_distance(qf, gf)
    # from the features: no (q+g)^2 matrix, so MSMT17-size sets fit (rerank.py)
    dev = "cuda" if torch.cuda.is_available() else None
    return k_reciprocal_from_features(qf, gf, k1, k2, lambda_value, device=dev).cpu()


def market_single_query(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    rerank: bool = False,
    ap: str = "market",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_rank: int = 50,
) -> dict:
    """Market-1501 / DukeMTMC-reID / CUHK03-NP single query (junk rules in ``metrics``)."""
    dist = _distances(qf, gf, rerank, k1, k2, lambda_value)
    r = evaluate_detailed(dist, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, ap=ap)
    out = _result(r.cmc, r.mAP, len(r.valid), r.num_skipped, ap)
    out["rerank"] = bool(rerank)
    return out


def pool_multi_query(qf, q_pids, q_camids, mq_f, mq_pids, mq_camids, pool: str = "mean"):
    """Per query, pool the L2-normalised features of the multi-query images (same pid and
    camera, e.g. Market's gt_bbox) by ``mean`` or ``max``. Returns (pooled [q, d], has_set [q]):
    a query whose (pid, camera) has no multi-query image keeps its own feature, and is counted.
    """
    if pool not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
    q = torch.nn.functional.normalize(as_tensor(qf, "qf", torch.float32), dim=1)
    m = torch.nn.functional.normalize(as_tensor(mq_f, "mq_f", torch.float32), dim=1)
    qp, qc = as_tensor(q_pids, "q_pids").long(), as_tensor(q_camids, "q_camids").long()
    mp, mc = as_tensor(mq_pids, "mq_pids").long(), as_tensor(mq_camids, "mq_camids").long()
    if m.shape[0] != mp.shape[0] or m.shape[0] != mc.shape[0]:
        raise ValueError(
            f"multi-query set: {m.shape[0]} features but {mp.shape[0]} pids, {mc.shape[0]} camids"
        )
    if m.shape[1] != q.shape[1]:
        raise ValueError(f"feature dims differ: qf {q.shape[1]}, mq_f {m.shape[1]}")
    span = int(max(int(qc.max()) if qc.numel() else 0, int(mc.max()) if mc.numel() else 0)) + 1
    keys, inv = torch.unique(mp * span + mc, return_inverse=True)
    if pool == "mean":
        acc = torch.zeros(len(keys), q.shape[1]).index_add_(0, inv, m)
        acc /= torch.bincount(inv, minlength=len(keys)).clamp(min=1)[:, None].float()
    else:
        acc = torch.full((len(keys), q.shape[1]), -torch.inf)
        acc.scatter_reduce_(0, inv[:, None].expand_as(m), m, reduce="amax")
    qk = qp * span + qc
    at = torch.searchsorted(keys, qk).clamp(max=max(len(keys) - 1, 0))
    has = (keys[at] == qk) if len(keys) else torch.zeros(len(qk), dtype=torch.bool)
    pooled = torch.where(has[:, None], acc[at] if len(keys) else q, q)
    return pooled, has.numpy()


def market_multi_query(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    mq_f,
    mq_pids,
    mq_camids,
    *,
    pool: str = "mean",
    rerank: bool = False,
    ap: str = "market",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    max_rank: int = 50,
) -> dict:
    """Market-1501 multiple query: each query's feature is the ``pool`` (mean or max) of its
    multi-query set (same pid and camera in gt_bbox), then evaluated like single query.
    ``num_without_set`` counts queries that had no multi-query image (own feature used)."""
    pooled, has = pool_multi_query(qf, q_pids, q_camids, mq_f, mq_pids, mq_camids, pool)
    out = market_single_query(
        pooled, gf, q_pids, g_pids, q_camids, g_camids, rerank=rerank, ap=ap, k1=k1, k2=k2,
        lambda_value=lambda_value, max_rank=max_rank,
    )
    out.update(pool=pool, num_without_set=int((~has).sum()))
    return out


def single_shot_trials(
    trials: Iterable[Sequence], *, ap: str = "market", max_rank: int = 50
) -> dict:
    """Small sets (VIPeR, PRID, ...): each trial is ``(qf, gf, q_pids, g_pids)`` with camera A
    probes and camera B gallery; results are averaged over trials (percent).

    The cameras differ by construction, so no same-camera junk applies; gallery-only identities
    (PRID's cam_b-only people) simply stay in the gallery as wrong answers.
    """
    results = []
    for t, trial in enumerate(trials):
        if len(trial) != 4:
            raise ValueError(f"trial {t}: expected (qf, gf, q_pids, g_pids), got {len(trial)} items")
        qf, gf, qp, gp = trial
        qp, gp = np.asarray(qp), np.asarray(gp)
        r = evaluate_detailed(
            euclidean_distance(qf, gf), qp, gp, np.zeros(len(qp), np.int64),
            np.ones(len(gp), np.int64), max_rank=max_rank, ap=ap,
        )
        results.append(_result(r.cmc, r.mAP, len(qp), r.num_skipped, ap))
    if not results:
        raise ValueError("single_shot_trials: no trials given")
    return mean_results(results)


def cuhk03_classic(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    repeats: int = 10,
    seed: int = 0,
    ap: str = "market",
    max_rank: int = 50,
) -> dict:
    """CUHK03 classic, one test split: single-gallery-shot, i.e. one gallery image per identity
    drawn at random (``numpy.random.default_rng(seed)``), ``repeats`` times, averaged. The
    caller averages the 20 splits with ``mean_results``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    gp = np.asarray(g_pids)
    gc = np.asarray(g_camids)
    dist = euclidean_distance(qf, gf)
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(repeats):
        perm = rng.permutation(len(gp))
        _, first = np.unique(gp[perm], return_index=True)
        pick = np.sort(perm[first])
        r = evaluate_detailed(
            dist[:, torch.from_numpy(pick)], q_pids, gp[pick], q_camids, gc[pick],
            max_rank=max_rank, ap=ap,
        )
        results.append(_result(r.cmc, r.mAP, len(r.valid), r.num_skipped, ap))
    out = mean_results(results)
    out["seed"] = int(seed)
    return out


def mean_results(results: Sequence[dict]) -> dict:
    """Average result dicts (trials, repeats, splits): rates are averaged, counts summed."""
    if not results:
        raise ValueError("mean_results: empty list")
    rules = {r["ap_rule"] for r in results}
    if len(rules) != 1:
        raise ValueError(f"mean_results: mixed AP rules {sorted(rules)}")
    out = {k: float(np.mean([r[k] for r in results])) for k in ("rank1", "rank5", "rank10", "mAP")}
    width = min(len(r["cmc"]) for r in results)
    out.update(
        num_queries=int(sum(r["num_queries"] for r in results)),
        num_skipped=int(sum(r["num_skipped"] for r in results)),
        ap_rule=rules.pop(),
        cmc=np.mean([r["cmc"][:width] for r in results], axis=0).tolist(),
        num_trials=len(results),
    )
    return out
