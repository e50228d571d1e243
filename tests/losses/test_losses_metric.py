"""Losses against per-anchor loop references and hand-computed cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from maskreid.losses import (BatchHardTripletLoss, NPairLoss, RankingLoss, SoftmaxLoss,
                             build_loss)


def ranking_loop(feat, labels, alpha, lam, top_k=None):
    """Eq. 5 written literally, one anchor at a time."""
    f = F.normalize(feat, dim=1)
    losses = []
    for k in range(len(labels)):
        pos = [i for i in range(len(labels)) if i != k and labels[i] == labels[k]]
        neg = [j for j in range(len(labels)) if labels[j] != labels[k]]
        if not pos:
            continue
        s_pos = torch.stack([f[k] @ f[i] for i in pos])
        s_neg = [f[k] @ f[j] for j in neg]
        if top_k is not None:
            s_neg = sorted(s_neg, key=lambda v: -float(v.detach()))[:top_k]
        m = s_pos.min()
        first = torch.log(1 + sum(torch.exp(torch.clamp(s - m + alpha, min=0)) for s in s_neg))
        second = lam / (2 * len(pos)) * ((s_pos - 1) ** 2).sum()
        losses.append(first + second)
    return torch.stack(losses).mean()


def batch(seed=0, n_ids=5, per_id=(3, 1, 4, 2, 1), dim=8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((c,), i) for i, c in enumerate(per_id[:n_ids])])
    feat = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    return feat, labels


@pytest.mark.parametrize("top_k", [None, 1, 3])
@pytest.mark.parametrize("alpha,lam", [(0.15, 2.0), (0.5, 0.7), (0.0, 0.0)])
def test_ranking_matches_loop_value_and_gradient(top_k, alpha, lam):
    feat, labels = batch()
    a = feat.clone().requires_grad_(True)
    b = feat.clone().requires_grad_(True)
    la = RankingLoss(alpha=alpha, lam=lam, top_k=top_k)(a, labels)
    lb = ranking_loop(b, labels, alpha, lam, top_k)
    la.backward()
    lb.backward()
    assert abs(la.item() - lb.item()) < 1e-5
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    assert a.grad.abs().sum() > 0


def test_ranking_lambda_zero_drops_second_term_exactly():
    feat, labels = batch(seed=3)
    full = RankingLoss(alpha=0.15, lam=2.0)(feat, labels)
    first_only = RankingLoss(alpha=0.15, lam=0.0)(feat, labels)
    # the second term computed by hand, averaged over the anchors
    f = F.normalize(feat, dim=1)
    s = f @ f.t()
    terms = []
    for k in range(len(labels)):
        pos = [i for i in range(len(labels)) if i != k and labels[i] == labels[k]]
        if pos:
            terms.append(2.0 / (2 * len(pos)) * sum((s[k, i] - 1) ** 2 for i in pos))
    second = torch.stack(terms).mean()
    assert torch.allclose(full - first_only, second, atol=1e-12)
    assert first_only.item() == pytest.approx(ranking_loop(feat, labels, 0.15, 0.0).item(), abs=1e-12)


def test_ranking_hand_computed_2d():
    # a0 = (2, 0) (normalises to (1, 0)), a1 = (0.6, 0.8): identity 0; n = (0.8, 0.6): identity 1
    # S(a0,a1) = 0.6, S(a0,n) = 0.8, S(a1,n) = 0.96; n has no positive, so it is not an anchor.
    # a0: log(1 + e^(0.8-0.6+0.15)) + 2/2*(0.6-1)^2 = log(1 + e^0.35) + 0.16 = 0.883382 + 0.16
    # a1: log(1 + e^(0.96-0.6+0.15)) + 0.16 = log(1 + e^0.51) + 0.16 = 0.980313 + 0.16
    # mean = (1.043382 + 1.140313) / 2 = 1.091848
    feat = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.8, 0.6]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    assert RankingLoss(0.15, 2.0)(feat, labels).item() == pytest.approx(1.091848, abs=1e-6)
    # add n2 = (-1, 0), identity 2: S(a0,n2) = -1, S(a1,n2) = -0.6, both hinges clip to 0 and
    # each still adds exp(0) = 1: a0 -> log(2 + e^0.35) + 0.16, a1 -> log(2 + e^0.51) + 0.16
    # mean = (1.389368 + 1.458908) / 2 = 1.424138
    feat2 = torch.cat([feat, torch.tensor([[-1.0, 0.0]], dtype=torch.float64)])
    labels2 = torch.tensor([0, 0, 1, 2])
    assert RankingLoss(0.15, 2.0)(feat2, labels2).item() == pytest.approx(1.424138, abs=1e-6)
    # top_k=1 keeps only the most similar negative (n) -> back to the first case
    assert RankingLoss(0.15, 2.0, top_k=1)(feat2, labels2).item() == pytest.approx(1.091848, abs=1e-6)


def test_ranking_rejects_batch_without_positive():
    with pytest.raises(ValueError, match="positive"):
        RankingLoss()(torch.randn(4, 3), torch.arange(4))


def triplet_loop(feat, labels, margin):
    out = []
    for a in range(len(labels)):
        d = [torch.linalg.norm(feat[a] - feat[j]) for j in range(len(labels))]
        pos = [d[i] for i in range(len(labels)) if i != a and labels[i] == labels[a]]
        neg = [d[j] for j in range(len(labels)) if labels[j] != labels[a]]
        if pos and neg:
            out.append(torch.clamp(max(pos) - min(neg) + margin, min=0))
    return torch.stack(out).mean()


def test_triplet_matches_loop_and_hand_case():
    feat, labels = batch(seed=1)
    a = feat.clone().requires_grad_(True)
    b = feat.clone().requires_grad_(True)
    la = BatchHardTripletLoss(0.3)(a, labels)
    lb = triplet_loop(b, labels, 0.3)
    la.backward()
    lb.backward()
    assert la.item() == pytest.approx(lb.item(), abs=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    # labels [0,0,1,1], points a=(0,0) b=(3,0) | c=(0,4) d=(0,1)
    # a: 3 - min(4, 1) + .3 = 2.3; b: 3 - min(5, sqrt 10) + .3 = 0.13772; c: 3 - 4 + .3 -> 0;
    # d: 3 - min(1, sqrt 10) + .3 = 2.3; mean = 1.184431
    f = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 1.0]])
    assert BatchHardTripletLoss(0.3)(f, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(1.184431, abs=1e-5)


def npair_loop(feat, labels):
    f = F.normalize(feat, dim=1)
    out = []
    for k in range(len(labels)):
        neg = [j for j in range(len(labels)) if labels[j] != labels[k]]
        for i in range(len(labels)):
            if i != k and labels[i] == labels[k]:
                out.append(torch.log(1 + sum(torch.exp(f[k] @ f[j] - f[k] @ f[i]) for j in neg)))
    return torch.stack(out).mean()


def test_npair_matches_loop_and_hand_case():
    feat, labels = batch(seed=2)
    a = feat.clone().requires_grad_(True)
    b = feat.clone().requires_grad_(True)
    la = NPairLoss()(a, labels)
    lb = npair_loop(b, labels)
    la.backward()
    lb.backward()
    assert la.item() == pytest.approx(lb.item(), abs=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    # a0=(1,0), a1=(0.6,0.8) id 0; n=(0.8,0.6) id 1. Pairs (a0,a1): log(1+e^(0.8-0.6)) = 0.798139
    # (a1,a0): log(1 + e^(0.96-0.6)) = 0.889260; mean 0.843700
    f = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    expect = (math.log(1 + math.exp(0.2)) + math.log(1 + math.exp(0.36))) / 2
    assert expect == pytest.approx(0.843700, abs=1e-6)
    assert NPairLoss()(f, torch.tensor([0, 0, 1])).item() == pytest.approx(expect, abs=1e-6)


def test_softmax_and_build_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    # -(log softmax) = log(1 + e^-2) and log(1 + e^1)
    expect = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    assert SoftmaxLoss()(logits, labels).item() == pytest.approx(expect, abs=1e-6)
    assert build_loss("softmax").input == "logits"
    r = build_loss("rank", alpha=0.2, lam=5, top_k=10)
    assert (r.alpha, r.lam, r.top_k, r.input) == (0.2, 5.0, 10, "feat")
    assert isinstance(build_loss("triplet", margin=0.5), BatchHardTripletLoss)
    assert isinstance(build_loss("npair"), NPairLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("arcface")
    with pytest.raises(TypeError, match="rank"):
        build_loss("rank", beta=1)


def test_half_precision_features_are_computed_in_float32():
    feat, labels = batch(seed=4)
    ref = RankingLoss()(feat.float(), labels)
    half = RankingLoss()(feat.to(torch.bfloat16), labels)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(ref.item(), abs=5e-2)


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


@pytest.mark.parametrize("top_k, negs_of", [
    # per anchor, the hinge values [S(a,n) - min_pos S + alpha]_+ of the negatives it keeps, by hand
    (1, {"a0": [0.866025 - 0.5 + 0.15], "a1": [0.866025 - 0.5 + 0.15]}),
    (2, {"a0": [0.866025 - 0.5 + 0.15, 0.0], "a1": [0.866025 - 0.5 + 0.15] * 2}),
    (None, {"a0": [0.866025 - 0.5 + 0.15, 0.0, 0.0], "a1": [0.866025 - 0.5 + 0.15] * 2 + [0.0]}),
])
def test_close_negatives_hand_computed(top_k, negs_of):
    """Anchors a0 (0 deg) and a1 (60 deg) share an identity (S = 0.5); negatives at 30, 90 and
    180 deg have S = .866 / 0 / -1 to a0 and .866 / .866 / -.5 to a1. top_k keeps each anchor's
    most similar negatives: satisfied ones (hinge 0) still add exp(0) = 1, so dropping the far
    ones is what lifts the violating negative's share of the gradient."""
    feat = torch.tensor([_unit(0), _unit(60), _unit(30), _unit(90), _unit(180)])
    labels = torch.tensor([0, 0, 1, 2, 3])
    pull = 2.0 / 2 * (0.5 - 1) ** 2  # lambda / (2 |B+|) * (S - 1)^2 with one positive
    per_anchor = [math.log(1 + sum(math.exp(h) for h in hs)) + pull for hs in negs_of.values()]
    got = RankingLoss(alpha=0.15, lam=2.0, top_k=top_k)(feat, labels)
    assert got.item() == pytest.approx(sum(per_anchor) / 2, abs=1e-5)
