"""Identity split and IoU metric of the segmenter trainer: hand-checked, no real data needed."""

import numpy as np
import pytest

from maskreid.segment.parsing_data import ParsingPairs, pid_of, split_identities, split_pairs
from maskreid.segment.quality import per_crop_iou


def test_split_is_deterministic_disjoint_and_a_tenth():
    pids = list(range(1, 752))  # Market has 751 training identities
    train, val = split_identities(pids, 0.1, seed=0)
    assert split_identities(pids, 0.1, seed=0) == (train, val)
    assert split_identities(list(reversed(pids)) * 3, 0.1, seed=0) == (train, val)  # order/duplicates do not matter
    assert train.isdisjoint(val) and train | val == set(pids)
    assert len(val) == 75
    assert split_identities(pids, 0.1, seed=1)[1] != val


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="val_fraction"):
        split_identities([1, 2, 3], 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        split_identities([5, 5, 5], 0.1)


def test_split_pairs_never_leaks_held_out_ids():
    rng = np.random.default_rng(0)
    pids = rng.integers(1, 40, size=300)
    pairs = ParsingPairs([f"{p:04d}_c1s1_{i:06d}_01.jpg" for i, p in enumerate(pids)], pids,
                         np.zeros((300, 4, 2, 3), np.uint8), np.zeros((300, 4, 2), np.uint8))
    tr, va, val_pids = split_pairs(pairs, 0.1, seed=3)
    assert len(tr) + len(va) == 300
    assert set(tr.pids.tolist()).isdisjoint(val_pids)
    assert set(va.pids.tolist()) == val_pids
    assert all(pid_of(n) in val_pids for n in va.names)


def test_pid_of_reads_market_names():
    assert pid_of("0002_c1s1_000451_03.jpg") == 2
    assert pid_of("bounding_box_train/1488_c3s3_064813_03.jpg.jpg") == 1488
    assert pid_of("-1_c1s1_000401_03.jpg") == -1
    with pytest.raises(ValueError, match="Thumbs.db"):
        pid_of("Thumbs.db")


def test_per_crop_iou_hand_computed():
    pred = np.zeros((3, 2, 2), bool)
    gt = np.zeros((3, 2, 2), bool)
    pred[0] = [[1, 1], [0, 0]]
    gt[0] = [[1, 0], [1, 0]]  # inter 1, union 3
    pred[1] = [[1, 1], [1, 1]]
    gt[1] = [[1, 1], [1, 1]]  # identical
    # crop 2: both empty -> 1 by convention
    np.testing.assert_allclose(per_crop_iou(pred, gt), [1 / 3, 1.0, 1.0])
    pred[2, 0, 0] = True  # prediction on an empty target -> 0
    assert per_crop_iou(pred, gt)[2] == 0.0
    with pytest.raises(ValueError, match="N×H×W"):
        per_crop_iou(pred[0], gt[0])
