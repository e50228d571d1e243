"""CMC and mAP under the Market-1501 rules of PROTOCOL.md, vectorised over queries.

Rules (each has a hand-computed test in tests/evaluate/test_eval_metrics.py):
- gallery items with pid -1, and items with the query's pid *and* camera, are ignored: removed
  from the ranking, neither right nor wrong. pid 0 distractors stay and count as wrong.
- a query without any valid match is left out of CMC and mAP and counted in ``num_skipped``.
- ``ap="market"`` (default): the official Market-1501 ``compute_AP``: at the m-th true match
  (1-based, at 1-based valid rank r) add 1/n_good * (m/r + (m-1)/(r-1)) / 2, the "before"
  precision being 1 when r == 1. ``ap="mean"``: 1/n_good * sum of m/r (torchreid, fast-reid).
- ties in distance keep gallery order (as a stable sort would).

Why not sort each row: a full sort of Market's 3368 x 15913 matrix costs ~5 s per CPU core.
Only the ranks of each query's few true matches are needed, so each row is instead
bucketed against its sorted true-match distances (``searchsorted``) and the bucket counts are
cumulated; exact ties and same-camera junk are then corrected on the small same-pid sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .distance import as_tensor

__all__ = ["AP_RULES", "EvalResult", "evaluate", "evaluate_detailed"]

AP_RULES = ("market", "mean")


@dataclass
class EvalResult:
    """Everything ``evaluate`` knows; arrays are per query, in query order."""

    cmc: np.ndarray  # [max_rank] float64 in [0, 1], over valid queries
    mAP: float
    ap: np.ndarray  # [num_q] float64, NaN for skipped queries
    valid: np.ndarray  # [num_q] bool: the query has at least one valid true match
    first_rank: np.ndarray  # [num_q] int64, 0-based valid position of the first match, -1 if skipped
    num_good: np.ndarray  # [num_q] int64, number of true matches in the gallery
    num_skipped: int
    ap_rule: str


def _labels(x, name: str, n: int) -> torch.Tensor:
    t = as_tensor(x, name)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer labels, got {t.dtype}")
    return t.to(torch.int64)


_CELLS = 4096  # value cells per row for the bucketing in _count_before
_PAIR_BUDGET = 1 << 24  # max (element, threshold) pairs compared at once


def _cells(x: torch.Tensor, scale, shift) -> torch.Tensor:
    """Monotone non-decreasing map value -> cell in [0, _CELLS): x*scale - shift, truncated.

    Any fixed monotone formula will do: exactness only needs values and thresholds to go
    through the same arithmetic.
    """
    return (x * scale).sub_(shift).to(torch.int32).clamp_(0, _CELLS - 1)


def _count_before(Db, T, Tidx, slot, n: int) -> torch.Tensor:
    """before[b, m] = #{g : (Db[b,g], g) < (T[b,m], Tidx[b,m])} lexicographically.

    Exact, in a few elementwise passes: each value goes to one of _CELLS equal-width cells of its
    row's range. As the cell map is monotone, a value in a lower cell than T[b,m]'s is below
    it and one in a higher cell is not; only the values sharing a cell with some threshold
    (about 1% on Market) are compared exactly, ties broken by gallery index.
    """
    B, G = Db.shape
    K = _CELLS
    dev = Db.device
    lo, hi = torch.aminmax(Db, dim=1, keepdim=True)
    span = hi - lo
    scale = torch.where(span > 0, (K - 1) / torch.where(span > 0, span, 1), 0)
    shift = lo * scale
    row_off = torch.arange(B, device=dev, dtype=torch.int32)[:, None] * K
    key = _cells(Db, scale, shift).add_(row_off).view(-1)
    hist = torch.bincount(key, minlength=B * K).view(B, K)
    cum_excl = hist.cumsum(1) - hist  # number of values in lower cells
    tc = _cells(torch.where(slot, T, lo), scale, shift).to(torch.int64)
    before = cum_excl.gather(1, tc)
    flag = torch.zeros(B * K, dtype=torch.bool, device=dev)
    flag[(tc + row_off)[slot]] = True
    rows, cols = flag.index_select(0, key).view(B, G).nonzero(as_tuple=True)
    del key, hist, cum_excl, flag
    exact = torch.zeros_like(before)
    step = max(1, _PAIR_BUDGET // max(n, 1))
    for a in range(0, rows.numel(), step):  # bounded memory, not a per-query loop
        r, c = rows[a : a + step], cols[a : a + step]
        d = Db[r, c]
        dc = _cells(d, scale[r, 0], shift[r, 0]).to(torch.int64)
        Tr = T[r]
        hit = (tc[r] == dc[:, None]) & slot[r] & (
            (d[:, None] < Tr) | ((d[:, None] == Tr) & (c[:, None] < Tidx[r]))
        )
        exact.index_add_(0, r, hit.to(exact.dtype))
    return before + exact


def evaluate_detailed(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap: str = "market",
    chunk_size: int = 256,
    device: str | None = None,
) -> EvalResult:
    """Per-query CMC/AP under the Market rules; see the module docstring.

    ``distmat`` is q x g (numpy or torch, any float dtype, kept as is); smaller = more similar.
    Work is done ``chunk_size`` queries at a time on ``device`` (CUDA when present), so memory
    stays at a few ``chunk_size x g`` buffers.
    """
    if ap not in AP_RULES:
        raise ValueError(f"ap must be one of {AP_RULES}, got {ap!r}")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    D = as_tensor(distmat, "distmat")
    if D.ndim != 2:
        raise ValueError(f"distmat must be 2-D (q x g), got shape {tuple(D.shape)}")
    if not D.dtype.is_floating_point:
        raise TypeError(f"distmat must be floating point, got {D.dtype}")
    nq, ng_all = D.shape
    qp = _labels(q_pids, "q_pids", nq)
    qc = _labels(q_camids, "q_camids", nq)
    gp = _labels(g_pids, "g_pids", ng_all)
    gc = _labels(g_camids, "g_camids", ng_all)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    # pid -1 is junk for every query: drop those columns once.
    keep = gp != -1
    kidx = None if bool(keep.all()) else keep.nonzero().squeeze(1).to(dev)
    gp_k, gc_k = gp[keep].to(dev), gc[keep].to(dev)
    G = gp_k.numel()
    # Same-pid gallery items of each query = one contiguous run of the pid-sorted gallery.
    order = torch.argsort(gp_k, stable=True)
    sp = gp_k[order]
    qp_d, qc_d = qp.to(dev), qc.to(dev)
    start = torch.searchsorted(sp, qp_d, right=False)
    count = torch.searchsorted(sp, qp_d, right=True) - start

    ap_out = torch.full((nq,), float("nan"), dtype=torch.float64)
    first = torch.full((nq,), -1, dtype=torch.int64)
    n_good = torch.zeros(nq, dtype=torch.int64)

    for s in range(0, nq, chunk_size):
        e = min(s + chunk_size, nq)
        B = e - s
        Db = D[s:e]
        if kidx is not None:
            Db = Db.to(dev).index_select(1, kidx)
        else:
            Db = Db.to(dev)
        lo, hi = torch.aminmax(Db)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            bad = s + int((~torch.isfinite(Db).all(1)).nonzero()[0])
            raise ValueError(f"distmat row {bad} holds NaN or inf")
        cnt = count[s:e]
        n = int(cnt.max()) if B else 0
        if n == 0 or G == 0:
            continue
        ar = torch.arange(n, device=dev)
        inset = ar[None, :] < cnt[:, None]
        sidx = order[(start[s:e, None] + ar[None, :]).clamp(max=G - 1)]  # B x n gallery columns
        same_cam = gc_k[sidx] == qc_d[s:e, None]
        good = inset & ~same_cam
        junk = inset & same_cam
        ds = Db.gather(1, sidx)
        inf = torch.tensor(float("inf"), dtype=Db.dtype, device=dev)
        # sidx is ascending within a row, so the stable sort orders equal distances by index.
        T, perm = torch.sort(torch.where(good, ds, inf), dim=1, stable=True)
        Tidx = sidx.gather(1, perm)
        ngood = good.sum(1)
        slot = ar[None, :] < ngood[:, None]  # B x n: real thresholds
        before = _count_before(Db, T, Tidx, slot, n)
        # same-camera junk of the query's pid is not part of the ranking.
        jb = (ds[:, None, :] < T[:, :, None]) | (
            (ds[:, None, :] == T[:, :, None]) & (sidx[:, None, :] < Tidx[:, :, None])
        )
        before = before - (jb & junk[:, None, :]).sum(2)

        # 0-based valid position of the m-th match; padding slots get a harmless 0.
        rank = torch.where(slot, before, 0).to(torch.float64)
        m = ar.to(torch.float64)[None, :]
        prec = (m + 1) / (rank + 1)
        if ap == "market":
            prev = torch.where(rank > 0, m / rank.clamp(min=1), torch.ones_like(rank))
            contrib = (prec + prev) / 2
        else:
            contrib = prec
        apb = torch.where(slot, contrib, 0.0).sum(1) / ngood.clamp(min=1)
        ok = ngood > 0
        ap_out[s:e] = torch.where(ok, apb, torch.full_like(apb, float("nan"))).cpu()
        first[s:e] = torch.where(ok, before[:, 0], torch.full_like(before[:, 0], -1)).cpu()
        n_good[s:e] = ngood.cpu()

    valid = (n_good > 0).numpy()
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery: CMC and mAP are undefined")
    fr = first.numpy()[valid]
    hits = np.bincount(np.minimum(fr, max_rank), minlength=max_rank + 1)[:max_rank]
    cmc = np.cumsum(hits) / num_valid
    ap_np = ap_out.numpy()
    return EvalResult(
        cmc=cmc.astype(np.float64),
        mAP=float(np.mean(ap_np[valid])),
        ap=ap_np,
        valid=valid,
        first_rank=first.numpy(),
        num_good=n_good.numpy(),
        num_skipped=int(nq - num_valid),
        ap_rule=ap,
    )


def evaluate(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    ap: str = "market",
    chunk_size: int = 256,
    device: str | None = None,
) -> tuple[np.ndarray, float]:
    """``(cmc[max_rank] in [0, 1], mAP in [0, 1])`` under the Market rules (module docstring)."""
    r = evaluate_detailed(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap, chunk_size, device
    )
    return r.cmc, r.mAP
