"""Re-ID losses: softmax, batch-hard triplet, N-pair (Eq. 3) and the MaskReID ranking loss (Eq. 5).

Every loss is a module called as ``loss(x, labels)``; its ``input`` attribute says which field of
``ModelOutput`` it takes (``"feat"`` or ``"logits"``), so a training loop can stay generic:
``loss(getattr(out, loss.input), labels)``. All are vectorised over the batch with masks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _check(x: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
    """Validate shapes; return x in at least float32 (under AMP, sums of exps need it)."""
    if x.dim() != 2:
        raise ValueError(f"{name}: expected [B, D] input, got shape {tuple(x.shape)}")
    if labels.dim() != 1 or labels.shape[0] != x.shape[0]:
        raise ValueError(f"{name}: labels must be [B] with B={x.shape[0]}, got {tuple(labels.shape)}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, neg) [B, B] bool masks: same label excluding the diagonal, and different label."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def cosine_similarity_matrix(feat: torch.Tensor) -> torch.Tensor:
    """S = dot products of L2-normalised features (the paper's similarity)."""
    f = F.normalize(feat, dim=1)
    return f @ f.t()


class SoftmaxLoss(nn.Module):
    """Identity classification: cross-entropy on the classifier logits."""

    input = "logits"
    CONFIG_KEYS: dict = {}  # params key -> argument (losses/objective.py); label_smoothing is a shared key

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits is None:
            raise ValueError("SoftmaxLoss needs logits: build the model with num_classes set")
        logits = _check(logits, labels, "SoftmaxLoss")
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)


class RankingLoss(nn.Module):
    """The MaskReID ranking loss, Eq. 5 of Qi et al. 2018. For every anchor x_k

        L_k = log(1 + sum_{j in B-} exp([S(x_k,x_j) - min_{i in B+} S(x_k,x_i) + alpha]_+))
              + lam / (2|B+|) * sum_{i in B+} (S(x_k,x_i) - 1)^2

    with S the dot product of L2-normalised features, B+ the other samples sharing the anchor's
    label and B- the samples with another label. Anchors are the samples with at least one
    positive in the batch; the loss is the mean of L_k over anchors. The first term ranks every
    negative behind the hardest positive by a margin alpha; the second pulls positives to S = 1.
    Note each negative contributes exp(0) = 1 even when satisfied, so the first term is never
    below log(1 + |B-|): a constant offset with zero gradient, part of the paper's formula.

    ``top_k``: keep only the k most similar negatives per anchor (the paper's "some negatives
    with small distances"); None (default) keeps all negatives, the literal Eq. 5.
    """

    input = "feat"
    CONFIG_KEYS = {"alpha": "alpha", "lambda": "lam", "top_k": "top_k"}  # lambda: a Python keyword

    def __init__(self, alpha: float = 0.15, lam: float = 2.0, top_k: int | None = None):
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {top_k}")
        self.alpha, self.lam, self.top_k = float(alpha), float(lam), top_k

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        feat = _check(feat, labels, "RankingLoss")
        s = cosine_similarity_matrix(feat)
        pos, neg = _pair_masks(labels)
        n_pos = pos.sum(1)
        anchors = n_pos > 0
        if not bool(anchors.any()):
            raise ValueError("RankingLoss: no sample in the batch has a positive (same label); "
                             "the sampler must put >= 2 images of an identity in each batch")
        if self.top_k is not None:
            k = min(self.top_k, s.shape[1])
            idx = s.masked_fill(~neg, float("-inf")).topk(k, dim=1).indices
            neg = neg & torch.zeros_like(neg).scatter_(1, idx, True)
        min_pos = s.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
        hinge = F.relu(s - min_pos + self.alpha)
        # rows without positives have min_pos = inf, so hinge = relu(-inf) = 0; dropped below
        rank_term = torch.log1p(torch.where(neg, torch.exp(hinge), torch.zeros_like(s)).sum(1))
        sq = torch.where(pos, (s - 1.0) ** 2, torch.zeros_like(s)).sum(1)
        pull_term = self.lam / 2.0 * sq / n_pos.clamp(min=1)
        per_anchor = rank_term + pull_term
        return per_anchor[anchors].mean()


class BatchHardTripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances of the raw features.

    For each anchor with at least one positive and one negative in the batch:
    relu(max_{i in B+} d(a,i) - min_{j in B-} d(a,j) + margin), averaged over those anchors.
    """

    input = "feat"
    CONFIG_KEYS = {"margin": "margin"}

    def __init__(self, margin: float = 0.3):
        super().__init__()
        self.margin = float(margin)

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        feat = _check(feat, labels, "BatchHardTripletLoss")
        sq = (feat * feat).sum(1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * feat @ feat.t()
        dist = d2.clamp(min=1e-12).sqrt()  # clamp: sqrt'(0) is infinite
        pos, neg = _pair_masks(labels)
        valid = pos.any(1) & neg.any(1)
        if not bool(valid.any()):
            raise ValueError("BatchHardTripletLoss: no anchor has both a positive and a negative "
                             "in the batch; use a PK sampler with P >= 2 and K >= 2")
        hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)
        hardest_neg = dist.masked_fill(~neg, float("inf")).amin(1)
        return F.relu(hardest_pos - hardest_neg + self.margin)[valid].mean()


class NPairLoss(nn.Module):
    """N-pair loss, Eq. 3 of the MaskReID paper (Sohn, NeurIPS 2016), on S as in Eq. 5:

        L(k, i) = log(1 + sum_{j in B-} exp(S(x_k,x_j) - S(x_k,x_i)))

    Choice of the positive: every ordered (anchor k, positive i) pair with the same label counts
    and the loss is their mean. With the N-pair arrangement (N identities x 2 images) that is
    exactly one positive per anchor, as in Sohn's paper; with more images per identity it
    averages over all positives instead of picking one at random (deterministic, lower variance).
    B- is every sample of another label (in Sohn's arrangement that includes the other
    identities' anchors as well as their positives).
    """

    input = "feat"

    def forward(self, feat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        feat = _check(feat, labels, "NPairLoss")
        s = cosine_similarity_matrix(feat)
        pos, neg = _pair_masks(labels)
        if not bool(pos.any()):
            raise ValueError("NPairLoss: the batch has no positive pair (two images of one identity)")
        # exp(S_kj - S_ki) = exp(S_kj) * exp(-S_ki); S in [-1, 1] keeps both finite
        neg_sum = torch.where(neg, torch.exp(s), torch.zeros_like(s)).sum(1, keepdim=True)
        pair_loss = torch.log1p(neg_sum * torch.exp(-s))  # [k, i]
        return pair_loss[pos].mean()


LOSSES = {"softmax": SoftmaxLoss, "triplet": BatchHardTripletLoss, "npair": NPairLoss,
          "rank": RankingLoss}


def build_loss(name: str, **cfg) -> nn.Module:
    """Build a loss by its params name: ``softmax``, ``triplet``, ``npair``, ``rank``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    try:
        return LOSSES[name](**cfg)
    except TypeError as e:
        raise TypeError(f"loss {name!r}: bad options {sorted(cfg)}: {e}") from e
