"""k-reciprocal re-ranking equals the line-by-line numpy port of the reference code."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskreid.evaluate import euclidean_distance, k_reciprocal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerank_reference import reference_numpy  # noqa: E402


def _dists(nq, ng, seed, dim=16, dtype=np.float32):
    rng = np.random.default_rng(seed)
    qf = rng.standard_normal((nq, dim)).astype(np.float32)
    gf = rng.standard_normal((ng, dim)).astype(np.float32)
    d = [euclidean_distance(a, b).numpy().astype(dtype) for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    return d


@pytest.mark.parametrize(
    "k1,k2,lam", [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.0), (15, 8, 1.0), (25, 6, 0.3), (3, 2, 0.7)]
)
def test_equals_reference_port(k1, k2, lam):
    qg, qq, gg = _dists(30, 80, seed=k1 * 10 + k2)
    ref = reference_numpy(qg, qq, gg, k1, k2, lam)
    got = k_reciprocal(qg, qq, gg, k1, k2, lam, row_chunk=13, col_block=7, pair_budget=300)
    assert got.dtype == torch.float32 and got.shape == (30, 80)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_chunking_does_not_change_result():
    qg, qq, gg = _dists(30, 80, seed=5)
    a = k_reciprocal(qg, qq, gg)
    b = k_reciprocal(qg, qq, gg, row_chunk=4, col_block=3, pair_budget=50)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-6)


def test_float64_and_asymmetric_inputs():
    # float64 is squared in float64 and then cast (as np.power(...).astype(float32));
    # an asymmetric q_q / g_g checks that columns (not rows) are normalised, then transposed.
    qg, qq, gg = _dists(20, 60, seed=9, dtype=np.float64)
    rng = np.random.default_rng(1)
    qq = qq * (1 + 0.2 * rng.random(qq.shape))
    gg = gg * (1 + 0.2 * rng.random(gg.shape))
    ref = reference_numpy(qg, qq, gg, 10, 4, 0.3)
    got = k_reciprocal(qg, qq, gg, 10, 4, 0.3, row_chunk=7, col_block=5)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_ties_broken_by_index_like_stable_port():
    # integer distances: many exact ties, including at the k1 / k1/2 / k2 cut-offs
    rng = np.random.default_rng(3)
    pts_q, pts_g = rng.integers(0, 4, (25, 2)), rng.integers(0, 4, (70, 2))
    d = lambda a, b: np.abs(a[:, None] - b[None]).sum(-1).astype(np.float32) + 1  # noqa: E731
    qg, qq, gg = d(pts_q, pts_g), d(pts_q, pts_q), d(pts_g, pts_g)
    ref = reference_numpy(qg, qq, gg, 8, 3, 0.3, stable=True)
    got = k_reciprocal(qg, qq, gg, 8, 3, 0.3, col_block=6)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_lambda_one_is_normalised_squared_distance():
    # by hand: with lambda = 1 only the original term is left: the squared distance, scaled
    qg, qq, gg = _dists(10, 30, seed=2)
    # (the reference code normalises columns, then transposes: entry (i, j) of q_g is divided
    # by the max of column i of the full matrix, i.e. over q_q[:, i] and q_g[i, :])
    colmax_q = np.maximum((qq**2).max(0), (qg**2).max(1))
    want = (qg**2) / colmax_q[:, None]
    got = k_reciprocal(qg, qq, gg, 5, 2, 1.0).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_bad_inputs_raise():
    qg, qq, gg = _dists(5, 8, seed=0)
    with pytest.raises(ValueError, match="q_q"):
        k_reciprocal(qg, qq[:4], gg)
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal(qg, qq, gg, k1=20)
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal(qg, qq, gg, k1=3, lambda_value=1.5)
    with pytest.raises(ValueError, match="column 0"):
        k_reciprocal(np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32),
                     np.zeros((3, 3), np.float32), k1=2, k2=2)
