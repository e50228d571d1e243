"""Protocol helpers: result dicts in percent, multi-query pooling, trials and CUHK03 repeats."""

import numpy as np
import pytest

from maskreid.evaluate import (
    cuhk03_classic,
    market_multi_query,
    market_single_query,
    mean_results,
    pool_multi_query,
    single_shot_trials,
)

KEYS = {"rank1", "rank5", "rank10", "mAP", "num_queries", "num_skipped", "ap_rule"}


def test_single_query_dict_by_hand():
    # unit features on a circle; query 0 = pid 1 cam 0 at angle 0
    ang = lambda *a: np.stack([np.cos(a), np.sin(a)], 1)  # noqa: E731
    qf = ang(0.0, 3.0)
    gf = ang(0.1, 0.2, 0.3, 3.05)  # g0: pid 1 cam 0 (junk), g1: pid 2, g2: pid 1 cam 1, g3: pid 4
    out = market_single_query(qf, gf, [1, 4], [1, 2, 1, 4], [0, 0], [0, 1, 1, 1])
    assert KEYS <= out.keys() and out["ap_rule"] == "market" and out["rerank"] is False
    # q0: valid ranking g1 (wrong), g2 (match) -> rank1 miss; AP = (1/2 + 0)/2 = 0.25
    # q1: g3 first -> AP 1.   rank1 = 50 %, mAP = (25 + 100)/2 = 62.5 %
    assert out["rank1"] == pytest.approx(50.0) and out["rank5"] == pytest.approx(100.0)
    assert out["mAP"] == pytest.approx(62.5)
    assert out["num_queries"] == 2 and out["num_skipped"] == 0
    assert market_single_query(qf, gf, [1, 4], [1, 2, 1, 4], [0, 0], [0, 1, 1, 1],
                               ap="mean")["mAP"] == pytest.approx(75.0)


def test_multi_query_pooling_by_hand():
    qf = np.array([[1.0, 0.0], [0.0, 1.0]])
    mq = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0], [5.0, 5.0]])
    # query 0 (pid 7 cam 1) pools mq 0 and 1 (pid 7 cam 1); mq 2 is pid 7 in another camera;
    # query 1 (pid 8 cam 0) has no multi-query image and keeps its own feature
    mean, has = pool_multi_query(qf, [7, 8], [1, 0], mq, [7, 7, 7, 9], [1, 1, 2, 0], "mean")
    np.testing.assert_allclose(mean.numpy(), [[0.5, 0.5], [0.0, 1.0]], atol=1e-7)
    assert has.tolist() == [True, False]
    mx, _ = pool_multi_query(qf, [7, 8], [1, 0], mq, [7, 7, 7, 9], [1, 1, 2, 0], "max")
    np.testing.assert_allclose(mx.numpy(), [[1.0, 1.0], [0.0, 1.0]], atol=1e-7)
    out = market_multi_query(qf, np.array([[1.0, 1.0], [0.0, 1.0]]), [7, 8], [7, 8], [1, 0],
                             [2, 2], mq, [7, 7, 7, 9], [1, 1, 2, 0], pool="max")
    assert out["pool"] == "max" and out["num_without_set"] == 1 and out["rank1"] == 100.0


def test_single_shot_trials_average():
    eye = np.eye(3)
    good = (eye, eye, [0, 1, 2], [0, 1, 2])  # rank1 100 %
    swapped = (eye, eye[[1, 0, 2]], [0, 1, 2], [0, 1, 2])  # q0 and q1 miss at rank 1
    out = single_shot_trials([good, swapped])
    assert out["num_trials"] == 2
    assert out["rank1"] == pytest.approx((100 + 100 / 3) / 2)
    assert out["rank5"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="trial 0"):
        single_shot_trials([(eye, eye, [0, 1, 2])])


def test_cuhk03_classic_single_gallery_shot():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 8))
    qf = centres + 0.01 * rng.standard_normal((5, 8))
    gp = np.repeat(np.arange(5), 3)
    gf = centres[gp] + 0.01 * rng.standard_normal((15, 8))
    args = (qf, gf, np.arange(5), gp, np.zeros(5, int), np.ones(15, int))
    out = cuhk03_classic(*args, repeats=4, seed=3)
    assert out["rank1"] == 100.0 and out["num_trials"] == 4 and out["seed"] == 3
    # one gallery image per identity: each repeat scores 5 queries with exactly one match
    assert out["num_queries"] == 20
    # a confusable identity makes the outcome depend on the draw; the seed makes it repeatable
    gf2 = gf.copy()
    gf2[0] = centres[1]  # one of pid 0's three gallery images looks exactly like pid 1
    a = cuhk03_classic(qf, gf2, *args[2:], repeats=5, seed=1)
    b = cuhk03_classic(qf, gf2, *args[2:], repeats=5, seed=1)
    assert a == b and a["rank1"] < 100.0


def test_mean_results_rejects_mixed_rules():
    r = {"rank1": 1.0, "rank5": 1.0, "rank10": 1.0, "mAP": 1.0, "num_queries": 1,
         "num_skipped": 0, "cmc": [1.0]}
    with pytest.raises(ValueError, match="mixed"):
        mean_results([dict(r, ap_rule="market"), dict(r, ap_rule="mean")])
