"""Batch composition, reproducibility and DDP sharding of the samplers."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from maskreid.samplers import MaskReIDSampler, PKSampler


def make_labels(seed=0, n_ids=40):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, n_ids)
    counts[:3] = 1  # identities with a single image
    labels = np.repeat(np.arange(n_ids) * 3 + 5, counts)  # non-contiguous ids
    return rng.permutation(labels)


def test_maskreid_batch_composition():
    labels = make_labels()
    s = MaskReIDSampler(labels, P=6, N=20, seed=1)
    batches = list(s)
    n_ids = np.unique(labels).size
    assert len(batches) == len(s) == n_ids
    anchors = []
    for b in batches:
        assert len(b) == 6 + 20
        lab = labels[b]
        anchor = lab[0]
        assert (lab[:6] == anchor).all()
        neg = lab[6:]
        assert len(set(neg.tolist())) == 20  # N distinct identities
        assert anchor not in neg
        anchors.append(anchor)
    # one pass over all identities, each once as anchor
    assert sorted(anchors) == sorted(np.unique(labels).tolist())


def test_maskreid_single_image_identity_sampled_with_replacement():
    labels = np.array([0, 1, 1, 1, 2, 2, 3])
    s = MaskReIDSampler(labels, P=4, N=3, seed=0)
    by_anchor = {labels[b[0]]: b for b in s}
    assert by_anchor[0][:4] == [0, 0, 0, 0]
    assert by_anchor[3][:4] == [6, 6, 6, 6]
    # identity 1 has 3 < 4 images: all from its rows
    assert set(by_anchor[1][:4]) <= {1, 2, 3}
    # identity 2 with P=2 (enough images): without replacement
    s2 = MaskReIDSampler(labels, P=2, N=3, seed=0)
    b = next(b for b in s2 if labels[b[0]] == 2)
    assert sorted(b[:2]) == [4, 5]


def test_maskreid_reproducible_and_epoch_dependent():
    labels = make_labels()
    a = list(MaskReIDSampler(labels, P=4, N=10, seed=7))
    b = list(MaskReIDSampler(labels, P=4, N=10, seed=7))
    c = list(MaskReIDSampler(labels, P=4, N=10, seed=8))
    assert a == b
    assert a != c
    s = MaskReIDSampler(labels, P=4, N=10, seed=7)
    s.set_epoch(1)
    assert list(s) != a
    s.set_epoch(0)
    assert list(s) == a


@pytest.mark.parametrize("cls,kw", [(MaskReIDSampler, dict(P=4, N=10)), (PKSampler, dict(P=4, K=3))])
@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_disjoint_and_covering(cls, kw, world_size):
    labels = make_labels()
    ranks = [cls(labels, seed=3, rank=r, world_size=world_size, **kw) for r in range(world_size)]
    for r in ranks:
        r.set_epoch(2)
    per_rank = [list(r) for r in ranks]
    lengths = {len(p) for p in per_rank}
    assert len(lengths) == 1  # same number of steps on every rank (DDP)
    single = cls(labels, seed=3, batches_per_epoch=ranks[0].num_global, **kw)
    single.set_epoch(2)
    everything = list(single)
    union = [b for p in per_rank for b in p]
    assert sorted(map(tuple, union)) == sorted(map(tuple, everything))  # covering
    # disjoint: rank r gets global batch positions r, r + ws, ...
    for r, p in enumerate(per_rank):
        assert p == everything[r::world_size]


def test_pk_composition():
    labels = make_labels()
    s = PKSampler(labels, P=5, K=3, seed=0)
    batches = list(s)
    assert len(batches) == np.unique(labels).size // 5
    seen = []
    for b in batches:
        assert len(b) == 15
        lab = labels[b].reshape(5, 3)
        assert (lab == lab[:, :1]).all()
        assert len(set(lab[:, 0].tolist())) == 5
        seen += lab[:, 0].tolist()
    assert len(set(seen)) == len(seen)  # one pass: no identity twice in an epoch


def test_batches_per_epoch_cycles_identities():
    labels = make_labels(n_ids=10)
    s = MaskReIDSampler(labels, P=2, N=3, batches_per_epoch=25)
    anchors = [labels[b[0]] for b in s]
    assert len(anchors) == 25
    assert sorted(anchors[:10]) == sorted(np.unique(labels).tolist())


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="negative"):
        MaskReIDSampler([0, 1, -1, 2], P=2, N=1)
    with pytest.raises(ValueError, match="N=5"):
        MaskReIDSampler([0, 1, 2], P=2, N=5)
    with pytest.raises(ValueError, match="rank"):
        PKSampler([0, 1, 2, 3], P=2, K=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="P=9"):
        PKSampler([0, 1, 2, 3], P=9, K=2)


def test_works_as_dataloader_batch_sampler():
    labels = make_labels()
    ds = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    loader = DataLoader(ds, batch_sampler=MaskReIDSampler(labels, P=3, N=5))
    idx, lab = next(iter(loader))
    assert idx.shape == (8,)
    assert (lab[:3] == lab[0]).all() and not (lab[3:] == lab[0]).any()
