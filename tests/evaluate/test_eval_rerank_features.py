"""k-reciprocal re-ranking from features equals the dense entry and the numpy reference port."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskreid.evaluate import euclidean_distance, k_reciprocal, k_reciprocal_from_features
from maskreid.evaluate.protocols import market_single_query
from maskreid.evaluate.metrics import evaluate_detailed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rerank_reference import reference_numpy  # noqa: E402


def _feats(nq, ng, seed, dim=16, ids=12, noise=0.8):
    """Identity-structured, L2-normalised float32 features (continuous: no exact ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim)).astype(np.float32)
    pid = rng.integers(0, ids, nq + ng)
    f = centres[pid] + noise * rng.standard_normal((nq + ng, dim)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f[:nq], f[nq:], pid[:nq], pid[nq:]


def _dense(qf, gf):
    return [euclidean_distance(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf))]


@pytest.mark.parametrize(
    "k1,k2,lam", [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.0), (15, 8, 1.0), (25, 6, 0.3), (3, 2, 0.7)]
)
def test_equals_dense_entry_and_reference_port(k1, k2, lam):
    qf, gf, _, _ = _feats(30, 90, seed=k1 * 10 + k2)
    qg, qq, gg = _dense(qf, gf)
    got = k_reciprocal_from_features(qf, gf, k1, k2, lam)
    assert got.dtype == torch.float32 and got.shape == (30, 90)
    np.testing.assert_allclose(got.numpy(), k_reciprocal(qg, qq, gg, k1, k2, lam).numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.numpy(), reference_numpy(qg, qq, gg, k1, k2, lam),
                               rtol=0, atol=1e-6)


def test_chunking_does_not_change_result():
    qf, gf, _, _ = _feats(40, 110, seed=5)
    base = k_reciprocal_from_features(qf, gf).numpy()
    for rc, pb, ob in [(1, 1, 1), (7, 50, 40), (33, 300, 1000), (150, 1 << 20, 1 << 20)]:
        got = k_reciprocal_from_features(qf, gf, row_chunk=rc, pair_budget=pb, orig_budget=ob)
        np.testing.assert_allclose(got.numpy(), base, rtol=0, atol=1e-6, err_msg=f"{rc} {pb} {ob}")


def test_default_tiles_above_and_below_the_diagonal_equal_dense_entry():
    # q + g = 3,300 > the default 2,048-row tile: rows meet a diagonal tile, a tile above it
    # and one read by columns; continuous features, so no exact ties
    qf, gf, _, _ = _feats(300, 3000, seed=11, dim=32, ids=150, noise=0.5)
    got = k_reciprocal_from_features(qf, gf).numpy()
    np.testing.assert_allclose(got, k_reciprocal(*_dense(qf, gf)).numpy(), rtol=0, atol=1e-6)


def test_first_per_row_orders_signed_values_like_a_sort():
    from maskreid.evaluate.rerank import _first_per_row

    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 6, (400,), generator=g)
    vals = torch.randn(400, generator=g) * torch.tensor([1e-30, 1.0, 1e20])[rows % 3]
    vals[:5] = torch.tensor([0.0, -0.0, float("inf"), -1e-45, 1e-45])  # zeros, subnormals
    got_v, pos = _first_per_row(rows, vals, 6, 7)
    for r in range(6):
        want = torch.sort(vals[rows == r]).values[:7]
        assert torch.equal(got_v[r], want), r
        assert bool((rows[pos[r]] == r).all()) and torch.equal(vals[pos[r]], got_v[r])


@pytest.mark.parametrize("tile", [None, 16, 37])
def test_exact_ties_across_tiles_equal_dense_entry(tile, monkeypatch):
    """Duplicated integer features: many exactly equal distances, some at the k-th place.

    Small integers make every squared distance exact in float32 on both paths, so the tie
    rule (ties by index) alone decides; with small tiles the tied entries sit in different
    tiles, some above and some below the diagonal, and the rows are rebuilt from the tiles.
    """
    import maskreid.evaluate.rerank as rr

    rng = np.random.default_rng(7)
    base = rng.integers(-3, 4, (40, 6)).astype(np.float32)
    f = base[rng.integers(0, 40, 160)]  # about four copies of each point
    qf, gf = f[:30], f[30:]
    calls = []
    real = rr._full_rows
    monkeypatch.setattr(rr, "_full_rows", lambda *a: calls.append(1) or real(*a))
    got = k_reciprocal_from_features(qf, gf, 7, 3, 0.3, normalize=False, row_chunk=tile)
    d = lambda a, b: np.sqrt(((a[:, None].astype(np.float64) - b[None]) ** 2).sum(-1))  # noqa: E731
    want = k_reciprocal(d(qf, gf), d(qf, qf), d(gf, gf), 7, 3, 0.3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-6)
    assert calls, "no row had a tie at the k-th place: the test does not reach the rebuild"


def test_torch_input_unnormalised_and_float64():
    # raw features are normalised (as euclidean_distance does); the device follows the input
    qf, gf, _, _ = _feats(20, 70, seed=3)
    want = k_reciprocal_from_features(qf, gf, 10, 4, 0.3).numpy()
    scale = np.random.default_rng(0).uniform(0.5, 3.0, (90, 1)).astype(np.float32)
    got = k_reciprocal_from_features(
        torch.from_numpy(qf * scale[:20]), torch.from_numpy(gf * scale[20:]).double(), 10, 4, 0.3
    )
    assert got.device.type == "cpu" and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)


def test_evaluate_stage_uses_it():
    # the rerank protocol = evaluating the dense entry's output
    qf, gf, qp, gp = _feats(30, 120, seed=8)
    rng = np.random.default_rng(1)
    qc, gc = rng.integers(0, 3, 30), rng.integers(0, 3, 120)
    got = market_single_query(qf, gf, qp, gp, qc, gc, rerank=True)
    r = evaluate_detailed(k_reciprocal(*_dense(qf, gf)), qp, gp, qc, gc)
    assert got["rerank"] is True
    assert got["mAP"] == pytest.approx(100 * r.mAP, abs=1e-9)
    assert got["cmc"] == pytest.approx([100 * c for c in r.cmc], abs=1e-9)


def test_bad_inputs_raise():
    qf, gf, _, _ = _feats(5, 8, seed=0)
    with pytest.raises(ValueError, match="dims differ"):
        k_reciprocal_from_features(qf, gf[:, :3])
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_from_features(qf, gf, k1=20)
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal_from_features(qf, gf, k1=3, lambda_value=1.5)
    with pytest.raises(TypeError, match="floating"):
        k_reciprocal_from_features(qf.astype(np.int64), gf, k1=3)
    with pytest.raises(ValueError, match="NaN"):
        k_reciprocal_from_features(np.full_like(qf, np.nan), gf, k1=3, k2=2)
    with pytest.raises(ValueError, match="distance 0"):
        same = np.ones((6, 4), np.float32)
        k_reciprocal_from_features(same[:2], same[2:], k1=2, k2=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_same_as_cpu():
    qf, gf, _, _ = _feats(50, 200, seed=4)
    cpu = k_reciprocal_from_features(qf, gf).numpy()
    gpu = k_reciprocal_from_features(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda())
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, rtol=0, atol=1e-5)


def _islands(dim, per_island, nq, A, R, seed):
    """Integer-valued features in 2*dim islands around the centres +-A*e_k (noise in [-R, R]).

    Integers below 2^24 make every squared distance exact in float32 whatever the summation
    order, so our matmul-based distances and the dense inputs of the sub-problem agree bitwise.
    """
    rng = np.random.default_rng(seed)
    n = 2 * dim * per_island
    island = np.repeat(np.arange(2 * dim), per_island)
    centres = np.zeros((2 * dim, dim), np.float32)
    centres[np.arange(dim), np.arange(dim)] = A
    centres[dim + np.arange(dim), np.arange(dim)] = -A
    f = centres[island] + rng.integers(-R, R + 1, (n, dim)).astype(np.float32)
    perm = rng.permutation(n)  # queries and gallery interleave islands
    f, island = f[perm], island[perm]
    return f[:nq], f[nq:], island[:nq], island[nq:], centres


@pytest.mark.slow
def test_large_problem_rows_equal_their_exact_sub_problem():
    """q + g = 80,000: a dense (q+g)^2 float32 matrix alone would be 25.6 GB.

    The features lie in 32 islands around +-A*e_k (16 antipodal pairs) with bounded noise; the
    test asserts the geometry that makes a sub-problem exact: every intra-island distance
    (<= 2r) is below every inter-island one (>= sqrt(2)*A - 2r), so each row's k1+1 neighbours,
    its k-reciprocal expansion and its query expansion stay inside its island; and the farthest
    point from a row lies in the antipodal island (>= 2A - 2r > sqrt(2)*A + 2r), so the row
    maximum used for normalisation is the same in the pair of islands as in the whole set.
    Hence, for a query of the pair (P, -P), the re-ranked row equals the dense computation on
    that pair alone (today's ``k_reciprocal``, and the numpy reference port for one pair) on the
    pair's gallery, and (1 - λ)·1 + λ·d²/max elsewhere (Jaccard distance 1: no shared support).
    Checked: every query of 2 island pairs (~250 rows), on all 78,000 gallery columns.
    Not checked: neighbour sets that cross islands (they cannot occur here by construction).
    """
    dim, per_island, nq, A, R = 16, 2500, 2000, 1900, 60
    qf, gf, qi, gi, centres = _islands(dim, per_island, nq, A, R, seed=0)
    allf = np.concatenate([qf, gf])
    isl = np.concatenate([qi, gi])
    r = float(np.sqrt(((allf - centres[isl]).astype(np.float64) ** 2).sum(1)).max())
    assert np.sqrt(2) * A - 2 * r > 2 * r  # locality
    assert 2 * A - 2 * r > np.sqrt(2) * A + 2 * r  # row max in the antipodal island
    assert float((allf.astype(np.float64) ** 2).sum(1).max()) * 4 < 2**24  # exact in float32
    k1, k2, lam = 20, 6, 0.3
    ours = k_reciprocal_from_features(qf, gf, k1, k2, lam, normalize=False)
    assert ours.shape == (nq, gf.shape[0])
    for pair, with_reference in ((3, True), (dim + 11, False)):
        members = {pair % dim, pair % dim + dim}
        qs = np.flatnonzero(np.isin(qi, list(members)))
        gs = np.flatnonzero(np.isin(gi, list(members)))
        sq = qf[qs].astype(np.float64)
        sg = gf[gs].astype(np.float64)
        d = lambda a, b: np.sqrt(np.maximum(  # noqa: E731  exact integers, then sqrt in float64
            (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T, 0))
        qg, qq, gg = d(sq, sg), d(sq, sq), d(sg, sg)
        np.fill_diagonal(qq, 0)
        np.fill_diagonal(gg, 0)
        sub = k_reciprocal(qg, qq, gg, k1, k2, lam).numpy()
        got = ours[qs].numpy()
        np.testing.assert_allclose(got[:, gs], sub, rtol=0, atol=1e-6)
        if with_reference:
            np.testing.assert_allclose(got[:, gs], reference_numpy(qg, qq, gg, k1, k2, lam),
                                       rtol=0, atol=1e-6)
        # elsewhere: Jaccard distance 1, original term d^2 / row max (over all q + g rows)
        d2 = d(sq, allf.astype(np.float64)) ** 2
        rest = np.setdiff1d(np.arange(gf.shape[0]), gs)
        want = (1 - lam) + lam * (d2[:, nq + rest] / d2.max(1, keepdims=True))
        np.testing.assert_allclose(got[:, rest], want, rtol=0, atol=1e-6)
