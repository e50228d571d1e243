"""CMC/mAP under the Market rules: hand-computed cases, then agreement with a per-query loop."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maskreid.evaluate import evaluate, evaluate_detailed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_reference import loop_evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
LABELS = SHARED / "data" / "protocols" / "market1501" / "labels.npz"


def _case():
    # query 0: pid 1 cam 0.  query 1: pid 3 cam 0 (its only gallery image is same-camera junk)
    #   g   pid cam  d(q0)  role for q0
    #   0    1   0   0.1    junk (same pid, same camera)       -> removed
    #   1   -1   1   0.2    junk (pid -1)                      -> removed
    #   2    0   1   0.3    distractor                         -> wrong, valid rank 1
    #   3    1   1   0.4    match                              -> valid rank 2
    #   4    2   1   0.5    wrong                              -> valid rank 3
    #   5    1   2   0.6    match                              -> valid rank 4
    #   6    3   0   0.7    wrong, valid rank 5 (for q1: same-camera junk)
    g_pids = np.array([1, -1, 0, 1, 2, 1, 3])
    g_cams = np.array([0, 1, 1, 1, 1, 2, 0])
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
            [0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.01],
        ]
    )
    return dist, np.array([1, 3]), g_pids, np.array([0, 0]), g_cams


def test_junk_distractors_and_market_ap_by_hand():
    dist, qp, gp, qc, gc = _case()
    r = evaluate_detailed(dist, qp, gp, qc, gc, max_rank=5)
    # matches at valid ranks 2 and 4 of 4 (n_good = 2):
    # market AP = 1/2*(1/2 + 0/1)/2 + 1/2*(2/4 + 1/3)/2 = 0.125 + 0.208333 = 1/3
    assert r.ap[0] == pytest.approx(1 / 3, abs=1e-12)
    assert r.first_rank[0] == 1  # the distractor (pid 0) counts as wrong; junk is gone
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1, 1])
    # query 1 has no valid match (only same-camera junk): skipped, counted
    assert not r.valid[1] and np.isnan(r.ap[1]) and r.num_skipped == 1
    assert r.mAP == pytest.approx(1 / 3, abs=1e-12)
    assert r.num_good.tolist() == [2, 0]


def test_mean_ap_rule_by_hand():
    dist, qp, gp, qc, gc = _case()
    cmc, mAP = evaluate(dist, qp, gp, qc, gc, max_rank=5, ap="mean")
    # mean of precision at the matches: (1/2 + 2/4) / 2 = 0.5
    assert mAP == pytest.approx(0.5, abs=1e-12)


def test_first_position_precision_before_is_one():
    # ranking [match, wrong, match]: market = 1/2*(1/1 + 1)/2 + 1/2*(2/3 + 1/2)/2 = 19/24
    # mean = (1 + 2/3) / 2 = 5/6
    dist = np.array([[0.1, 0.2, 0.3]])
    args = (np.array([5]), np.array([5, 6, 5]), np.array([0]), np.array([1, 1, 1]))
    assert evaluate(dist, *args)[1] == pytest.approx(19 / 24, abs=1e-12)
    assert evaluate(dist, *args, ap="mean")[1] == pytest.approx(5 / 6, abs=1e-12)


def test_ties_keep_gallery_order():
    # g0 (wrong) and g1 (match) tie at 0.5; g2 (match) at 0.7.
    qp, qc = np.array([1]), np.array([0])
    dist = np.array([[0.5, 0.5, 0.7]])
    gp, gc = np.array([2, 1, 1]), np.array([1, 1, 1])
    r = evaluate_detailed(dist, qp, gp, qc, gc, max_rank=3)
    # [wrong, match, match]: 1/2*(1/2 + 0)/2 + 1/2*(2/3 + 1/2)/2 = 5/12
    assert r.first_rank[0] == 1 and r.ap[0] == pytest.approx(5 / 12, abs=1e-12)
    # swap gallery order: the match now comes first among the tied pair -> 19/24
    r2 = evaluate_detailed(dist, qp, gp[[1, 0, 2]], qc, gc, max_rank=3)
    assert r2.first_rank[0] == 0 and r2.ap[0] == pytest.approx(19 / 24, abs=1e-12)


def test_bad_inputs_raise():
    dist, qp, gp, qc, gc = _case()
    with pytest.raises(ValueError, match="ap must be"):
        evaluate(dist, qp, gp, qc, gc, ap="voc")
    with pytest.raises(ValueError, match="g_pids"):
        evaluate(dist, qp, gp[:-1], qc, gc)
    bad = dist.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        evaluate(bad, qp, gp, qc, gc)
    with pytest.raises(ValueError, match="no query"):
        evaluate(dist[1:], qp[1:], gp, qc[1:], gc)


@pytest.mark.parametrize("ap", ["market", "mean"])
@pytest.mark.parametrize("kind", ["float32", "float64", "ties"])
def test_equals_loop_on_random_inputs(ap, kind):
    rng = np.random.default_rng({"float32": 1, "float64": 2, "ties": 3}[kind])
    nq, ng = 60, 400
    qp = rng.integers(1, 20, nq)
    gp = rng.integers(-1, 20, ng)  # includes junk (-1) and distractors (0)
    qc, gc = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    if kind == "ties":
        dist = rng.integers(0, 15, (nq, ng)).astype(np.float32)
    else:
        dist = rng.random((nq, ng)).astype(kind)
    r = evaluate_detailed(dist, qp, gp, qc, gc, max_rank=30, ap=ap, chunk_size=17)
    cmc, mAP, aps = loop_evaluate(dist, qp, gp, qc, gc, max_rank=30, ap=ap)
    np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.ap, aps, rtol=0, atol=1e-12, equal_nan=True)
    assert r.mAP == pytest.approx(mAP, abs=1e-12)
    assert r.num_skipped == int(np.isnan(aps).sum())


def test_equals_loop_on_real_market_layout():
    if not LABELS.exists():
        pytest.skip(f"{LABELS} not available")
    lab = np.load(LABELS)
    rng = np.random.default_rng(0)
    sel = rng.choice(len(lab["query_pids"]), 150, replace=False)
    qp, qc = lab["query_pids"][sel], lab["query_camids"][sel]
    gp, gc = lab["gallery_pids"], lab["gallery_camids"]
    # identity-structured random features so matches sit at varied ranks
    centres = rng.standard_normal((1502, 32)).astype(np.float32)
    qf = centres[qp] + rng.standard_normal((len(qp), 32)).astype(np.float32)
    gf = centres[np.maximum(gp, 0)] + rng.standard_normal((len(gp), 32)).astype(np.float32)
    dist = torch.cdist(torch.from_numpy(qf), torch.from_numpy(gf)).numpy()
    r = evaluate_detailed(dist, qp, gp, qc, gc, chunk_size=64)
    cmc, mAP, aps = loop_evaluate(dist, qp, gp, qc, gc)
    np.testing.assert_allclose(r.ap, aps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.cmc, cmc, rtol=0, atol=1e-12)
    assert r.num_skipped == 0 and 0.0 < r.mAP < 1.0
