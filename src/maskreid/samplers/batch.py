"""Batch samplers for metric-learning losses, DDP-aware.

Both samplers are ``batch_sampler``s for ``torch.utils.data.DataLoader``: iterables of lists of
dataset indices. An epoch's global list of batches is drawn from ``numpy.random.default_rng
(seed + epoch)``; every rank draws the same list and keeps the batches ``rank::world_size``, so
ranks are disjoint and together cover the epoch (call ``set_epoch(e)`` each epoch, like
``DistributedSampler``). The global count is rounded up to a multiple of ``world_size`` by
drawing extra batches, so every rank runs the same number of steps (DDP needs that).

Labels: pass the labels of the training rows only, relabelled or not. Junk (-1) and distractor
(pid 0 in Market/Duke test sets) images never belong to a training set, so a negative label is
treated as a caller bug and rejected; 0 is an ordinary identity (training labels are 0..C-1).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class _EpochBatchSampler:
    """Shared epoch / rank bookkeeping; subclasses draw an epoch's global batch list."""

    def __init__(self, labels: Sequence[int] | np.ndarray, default_batches: int,
                 batches_per_epoch: int | None, seed: int, rank: int, world_size: int):
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        bad = np.flatnonzero(labels < 0)
        if bad.size:
            raise ValueError(
                f"labels contain negative (junk) ids at rows {bad[:5].tolist()}"
                f"{' ...' if bad.size > 5 else ''}; pass the training rows only"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch must be >= 1, got {batches_per_epoch}")
        self.labels = labels
        # identity -> its row indices, as CSR arrays (ids sorted ascending)
        self.order = np.argsort(labels, kind="stable")
        self.ids, self.starts, self.counts = np.unique(
            labels[self.order], return_index=True, return_counts=True
        )
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        total = batches_per_epoch if batches_per_epoch is not None else default_batches
        self.num_global = -(-total // self.world_size) * self.world_size
        self.epoch = 0

    @property
    def num_ids(self) -> int:
        return int(self.ids.size)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for a new epoch (same on every rank)."""
        self.epoch = int(epoch)

    def _images(self, rng: np.random.Generator, id_pos: np.ndarray, k: int) -> np.ndarray:
        """k row indices of each identity in ``id_pos`` (positions in self.ids): [len, k].

        Without replacement when the identity has >= k images, with replacement otherwise.
        """
        out = np.empty((id_pos.size, k), dtype=np.int64)
        for r, p in enumerate(id_pos):
            n = int(self.counts[p])
            pick = rng.choice(n, size=k, replace=n < k)
            out[r] = self.order[self.starts[p] + pick]
        return out

    def _id_cycle(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n identity positions: successive shuffled passes over all identities."""
        reps = -(-n // self.num_ids)
        return np.concatenate([rng.permutation(self.num_ids) for _ in range(reps)])[:n]

    def global_batches(self, epoch: int) -> list[list[int]]:  # pragma: no cover
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        yield from batches[self.rank::self.world_size]

    def __len__(self) -> int:
        return self.num_global // self.world_size


class MaskReIDSampler(_EpochBatchSampler):
    """The MaskReID batch: one anchor identity x P images, then N images of N other identities.

    Each batch is ``[P indices of the anchor identity] + [N indices, one per distinct other
    identity]`` (length P + N; with the paper's P=10, N=54 that is 64). Anchor identities cycle
    through all identities in a per-epoch shuffled order, so by default an epoch has one batch
    per identity (``batches_per_epoch`` overrides; more batches start further shuffled passes).
    An identity with fewer than P images is sampled with replacement (a 1-image identity gives P
    copies of its image: the ranking loss then sees S = 1 positives, which only adds a constant).
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, P: int = 10, N: int = 54,
                 batches_per_epoch: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if P < 1 or N < 0:
            raise ValueError(f"need P >= 1 and N >= 0, got P={P}, N={N}")
        num_ids = np.unique(np.asarray(labels)).size
        super().__init__(labels, num_ids, batches_per_epoch, seed, rank, world_size)
        if N > self.num_ids - 1:
            raise ValueError(f"N={N} negatives need N+1 identities, labels have {self.num_ids}")
        self.P, self.N = int(P), int(N)

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        anchors = self._id_cycle(rng, self.num_global)
        batches = []
        for a in anchors:
            pos = self._images(rng, np.array([a]), self.P)[0]
            # N distinct identities among the C-1 others: draw from 0..C-2 and skip the anchor
            others = rng.choice(self.num_ids - 1, size=self.N, replace=False)
            others = others + (others >= a)
            neg = self.order[self.starts[others] + (rng.random(self.N) * self.counts[others]).astype(np.int64)]
            batches.append(np.concatenate([pos, neg]).tolist())
        return batches


class PKSampler(_EpochBatchSampler):
    """P identities x K images per batch (batch-hard triplet training, Hermans et al. 2017).

    Identities are taken in per-epoch shuffled passes, P at a time, distinct within a batch;
    an epoch has ``num_ids // P`` batches by default. Identities with fewer than K images are
    sampled with replacement.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, P: int = 16, K: int = 4,
                 batches_per_epoch: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if P < 1 or K < 1:
            raise ValueError(f"need P >= 1 and K >= 1, got P={P}, K={K}")
        num_ids = np.unique(np.asarray(labels)).size
        if P > num_ids:
            raise ValueError(f"P={P} identities per batch but labels have only {num_ids}")
        super().__init__(labels, max(num_ids // P, 1), batches_per_epoch, seed, rank, world_size)
        self.P, self.K = int(P), int(K)

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + epoch)
        per_pass = self.num_ids // self.P
        passes = -(-self.num_global // per_pass)
        batches = []
        for _ in range(passes):
            ids = rng.permutation(self.num_ids)[: per_pass * self.P].reshape(per_pass, self.P)
            for group in ids:
                batches.append(self._images(rng, group, self.K).reshape(-1).tolist())
        return batches[: self.num_global]
