"""Direct numpy port of the k-reciprocal re-ranking reference (Zhong et al., CVPR 2017).

Follows the distance-matrix version published with the paper's code
(zhunzhong07/person-re-ranking, python-version/re_ranking_ranklist.py) step by step, with its
precision: float32 throughout (that version replaced the original float16 V/original_dist by
float32). One deliberate change: ties in distance are broken by index (stable argsort).
Per-row Python loops on purpose: this is the slow yardstick that
``maskreid.evaluate.rerank.k_reciprocal`` must match, used by the tests and the benchmark.
"""

from __future__ import annotations

import numpy as np


def reference_numpy(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3, stable=True):
    nq = q_g.shape[0]
    full = np.concatenate(
        [np.concatenate([q_q, q_g], axis=1), np.concatenate([q_g.T, g_g], axis=1)], axis=0
    )
    full = np.power(full, 2).astype(np.float32)
    dist = np.transpose(1.0 * full / np.max(full, axis=0))
    del full
    n = dist.shape[0]
    V = np.zeros_like(dist, dtype=np.float32)
    # stable=True: ties by index (as ours). The original's default (unstable) argsort orders ties
    # arbitrarily; squaring in float32 does create ties at Market size.
    rank = np.argsort(dist, kind="stable" if stable else None).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        back = rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    for i in range(n):
        kr = reciprocal(i, k1)
        expansion = kr
        for cand in kr:
            ckr = reciprocal(cand, half)
            if len(np.intersect1d(ckr, kr)) > 2.0 / 3 * len(ckr):
                expansion = np.append(expansion, ckr)
        expansion = np.unique(expansion)
        w = np.exp(-dist[i, expansion])
        V[i, expansion] = 1.0 * w / np.sum(w)
    dist = dist[:nq]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(n):
            V_qe[i, :] = np.mean(V[rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del rank
    inv = [np.where(V[:, c] != 0)[0] for c in range(n)]
    jac = np.zeros_like(dist, dtype=np.float32)
    for i in range(nq):
        tmin = np.zeros((1, n), dtype=np.float32)
        cols = np.where(V[i, :] != 0)[0]
        for c in cols:
            rows = inv[c]
            tmin[0, rows] = tmin[0, rows] + np.minimum(V[i, c], V[rows, c])
        jac[i] = 1 - tmin / (2.0 - tmin)
    final = jac * (1 - lambda_value) + dist * lambda_value
    return final[:nq, nq:]
