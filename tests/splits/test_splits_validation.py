"""The validation split of training identities: disjoint from what trains, Market-style roles."""

from __future__ import annotations

import pandas as pd
import pytest

from maskreid.splits import build_manifest, merged_train
from maskreid.splits.validation import validation_split


def _market(train_records):
    rows = [(p, c, k, "train") for p, c, k in train_records]
    rows += [(90, 0, 0, "query"), (90, 1, 0, "gallery"), (0, 1, 1, "gallery")]
    frame = pd.DataFrame({
        "image_id": [f"m/{p}_c{c}_{k}_{s}.jpg" for p, c, k, s in rows],
        "sha256": ["0" * 64] * len(rows),
        "pid": [p for p, *_ in rows],
        "camid": [c for _, c, _, _ in rows],
        "split": [s for *_, s in rows],
    })
    return build_manifest("market1501", frame, "market")


def test_held_out_identities_leave_training_and_get_one_query_per_camera():
    # ids 1..6 seen by cams 0 and 1 (3 images each per cam); id 7 by cam 0 only
    recs = [(p, c, k) for p in range(1, 7) for c in (0, 1) for k in range(3)] + [(7, 0, k) for k in range(3)]
    m = _market(recs)
    pids, val = validation_split(m, 2, seed=3)
    assert len(pids) == 2 and pids <= set(range(1, 7))  # never the single-camera id 7
    train = merged_train({"market1501": m}, exclude_pids={"market1501": pids})
    assert set(train["pid"]) == set(range(1, 8)) - pids
    assert set(val["pid"]) == pids
    q = val[val["role"] == "query"]
    assert len(q) == 4  # 2 ids x 2 cameras
    assert not q.duplicated(["pid", "camid"]).any()
    assert (val["role"] == "gallery").sum() == 2 * 2 * 2  # the other 2 images per id and camera
    # the query is the first image of its (pid, cam) by image_id: deterministic
    assert q["image_id"].str.endswith("_0_train.jpg").all()
    # test identities and distractors never enter validation
    assert 90 not in set(val["pid"]) and 0 not in set(val["pid"])


def test_the_draw_depends_on_the_seed_only():
    m = _market([(p, c, 0) for p in range(1, 41) for c in (0, 1)])
    a, _ = validation_split(m, 10, seed=0)
    b, _ = validation_split(m, 10, seed=0)
    c, _ = validation_split(m, 10, seed=1)
    assert a == b and a != c


def test_asking_for_too_many_identities_names_the_limit():
    m = _market([(p, c, 0) for p in range(1, 4) for c in (0, 1)])
    with pytest.raises(ValueError, match=r"n_ids must be in \[1, 2\]"):
        validation_split(m, 3)
