"""Straightforward per-query reference implementations used by the tests and the benchmark.

Kept out of the library on purpose: these are the slow, obviously-correct versions that the
vectorised code in ``maskreid.evaluate`` must agree with.
"""

from __future__ import annotations

import numpy as np


def loop_evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, ap="market"):
    """Per-query loop, written like the official Market-1501 ``compute_AP``.

    Returns (cmc, mAP, per-query AP with NaN for skipped queries).
    """
    distmat = np.asarray(distmat)
    nq = distmat.shape[0]
    aps = np.full(nq, np.nan)
    cmc_sum = np.zeros(max_rank)
    n_valid = 0
    for i in range(nq):
        order = np.argsort(distmat[i], kind="stable")  # ties keep gallery order
        p, c = g_pids[order], g_camids[order]
        junk = (p == -1) | ((p == q_pids[i]) & (c == q_camids[i]))
        match = (p == q_pids[i])[~junk]
        ngood = int(match.sum())
        if ngood == 0:
            continue
        n_valid += 1
        # the official loop: old_precision = 1 at start, updated at every valid position
        old_recall, old_precision, hits, a = 0.0, 1.0, 0, 0.0
        precisions = []
        for j, is_match in enumerate(match):
            if is_match:
                hits += 1
            recall = hits / ngood
            precision = hits / (j + 1)
            if is_match:
                precisions.append(precision)
            a += (recall - old_recall) * ((old_precision + precision) / 2)
            old_recall, old_precision = recall, precision
            if hits == ngood:
                break
        aps[i] = a if ap == "market" else float(np.mean(precisions))
        first = int(np.argmax(match))
        if first < max_rank:
            cmc_sum[first:] += 1
    return cmc_sum / n_valid, float(np.nanmean(aps)), aps
