"""Merged pre-training relabelling and manifest files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from maskreid.splits import build_manifest, merged_train, read_manifest, write_manifest
from maskreid.splits.io import meta_path


def _frame(records, name, split="all"):
    return pd.DataFrame(
        {
            "image_id": [f"{name}/{p}_{c}_{k}.jpg" for p, c, k in records],
            "sha256": ["0" * 64] * len(records),
            "pid": [p for p, _, _ in records],
            "camid": [c for _, c, _ in records],
            "split": split,
        }
    )


@pytest.fixture()
def manifests():
    viper = build_manifest("viper", _frame([(p, c, 0) for p in range(1, 633) for c in (0, 1)], "viper"), "single_shot", 0, 2)
    market = build_manifest(
        "market1501",
        pd.concat([
            _frame([(p, c, 0) for p in (3, 7, 12) for c in (0, 1)], "market1501", "train"),
            _frame([(0, 0, 1), (-1, 1, 1)], "market1501", "train"),  # distractor/junk: no identity
            _frame([(20, 0, 0)], "market1501", "query"),
            _frame([(20, 1, 0), (0, 1, 0), (-1, 0, 0)], "market1501", "gallery"),
        ]),
        "market",
    )
    return {"viper": viper, "market1501": market}


def test_merged_relabel_contiguous_and_namespaced(manifests):
    m = merged_train(manifests, trial=1)
    v_train = set(manifests["viper"].query("trial == 1 and role == 'train'").pid)
    assert set(m[m.dataset == "viper"].pid) == v_train  # trial 1 for viper, fixed split for market
    assert set(m[m.dataset == "market1501"].pid) == {3, 7, 12}
    assert sorted(m.label.unique()) == list(range(316 + 3))
    assert m.groupby("global_pid").label.nunique().max() == 1 and m.groupby("label").global_pid.nunique().max() == 1
    # sorted (dataset, pid): market1501 first, pids numerically
    assert m.loc[m.global_pid == "market1501_3", "label"].iloc[0] == 0
    assert m.loc[m.global_pid == "market1501_12", "label"].iloc[0] == 2
    first_viper = min(v_train)
    assert m.loc[m.global_pid == f"viper_{first_viper}", "label"].iloc[0] == 3
    assert (m.global_pid == m.dataset + "_" + m.pid.astype(str)).all()
    assert ("viper_12" in set(m.global_pid)) == (12 in v_train)
    # order of the dict does not change labels
    rev = merged_train(dict(reversed(list(manifests.items()))), trial=1)
    pd.testing.assert_frame_equal(m, rev)


def test_merged_exclude_and_errors(manifests):
    test0 = set(manifests["viper"].query("trial == 0 and role == 'query'").pid)
    m = merged_train(manifests, trial=1, exclude_pids={"viper": test0})
    assert not set(m[m.dataset == "viper"].pid) & test0
    assert m.label.max() == m.global_pid.nunique() - 1
    with pytest.raises(KeyError, match="cuhk01"):
        merged_train(manifests, exclude_pids={"cuhk01": [1]})
    with pytest.raises(ValueError, match="viper.*trial 5"):
        merged_train(manifests, trial=5)


def test_merged_test_identities_join_their_train_rows(manifests):
    """A pre-training set's test identities: query and gallery rows with an identity join, junk
    (-1) and distractors (0) do not, and labels stay contiguous over train + test identities."""
    m = merged_train({"market1501": manifests["market1501"]}, test_identities=["market1501"])
    assert sorted(m["pid"].unique()) == [3, 7, 12, 20]
    assert (m["pid"] == 20).sum() == 2 and m["label"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert sorted(merged_train({"market1501": manifests["market1501"]})["pid"].unique()) == [3, 7, 12]
    both = merged_train(manifests, trial=1, test_identities=["market1501"])
    only_train = merged_train(manifests, trial=1)
    assert both.query("dataset == 'viper'")["image_id"].tolist() == only_train.query("dataset == 'viper'")["image_id"].tolist()
    assert both["label"].nunique() == only_train["label"].nunique() + 1  # Market's person 20
    with pytest.raises(KeyError, match="test_identities names datasets not being merged: \\['duke'\\]"):
        merged_train(manifests, test_identities=["duke"])


def test_merged_keeps_viper_person_zero():
    viper = build_manifest("viper", _frame([(p, c, 0) for p in range(0, 632) for c in (0, 1)], "viper"), "single_shot", 0, 5)
    t = next(t for t in range(5) if 0 in set(viper.query(f"trial == {t} and role == 'train'").pid))
    m = merged_train({"viper": viper}, trial=t)
    assert m.loc[m.global_pid == "viper_0", "label"].unique().tolist() == [0]


def test_write_read_manifest_stem_path(tmp_path, manifests):
    write_manifest(manifests["market1501"], tmp_path / "market1501", {"protocol": "market"})
    assert (tmp_path / "market1501.parquet").exists() and (tmp_path / "market1501.meta.json").exists()
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "market1501"), manifests["market1501"])


def test_write_read_manifest_atomic(tmp_path, manifests):
    path = tmp_path / "splits" / "viper.parquet"
    write_manifest(manifests["viper"], path, {"protocol": "single_shot", "seed": 0, "dataset": "viper"})
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, manifests["viper"])
    meta = json.loads(meta_path(path).read_text())
    assert meta["protocol"] == "single_shot" and meta["trials"] == [0, 1]
    assert meta["counts_trial0"] == {"train": 632, "query": 316, "gallery": 316}
    assert sorted(p.name for p in path.parent.iterdir()) == ["viper.meta.json", "viper.parquet"]  # no temp left
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_manifest(tmp_path / "nope.parquet")
    with pytest.raises(KeyError, match="camid"):
        write_manifest(manifests["viper"].drop(columns="camid"), path, {})


@pytest.mark.parametrize("seed", range(6))
def test_viper_person_000_trains_whenever_its_split_says_so(seed):
    """VIPeR counts from 000. With one trial, person 000 trains for some seeds (seed 1 among them),
    and is then in no query: it must still be a training identity, not a dropped 'distractor'."""
    frame = _frame([(p, c, 0) for p in range(632) for c in (0, 1)], "viper")
    manifest = build_manifest("viper", frame, "single_shot", seed, 1)
    trains = 0 in set(manifest.query("role == 'train'").pid)
    m = merged_train({"viper": manifest})
    assert ("viper_0" in set(m.global_pid)) == trains
    assert set(m.pid) == set(manifest.query("role == 'train'").pid)  # no real identity dropped
    if seed == 1:
        assert trains  # the case that used to be dropped


def test_shinpuhkan_trains_on_all_of_it():
    """The paper pre-trains on all of Shinpuhkan: no identity is held out for a test split."""
    frame = _frame([(p, c, k) for p in range(1, 25) for c in range(16) for k in range(2)], "shinpuhkan")
    manifest = build_manifest("shinpuhkan", frame, "single_shot", 0, 3)
    assert set(manifest.role) == {"train"} and sorted(manifest.trial.unique()) == [0, 1, 2]
    for t in range(3):
        m = merged_train({"shinpuhkan": manifest}, trial=t)
        assert len(m) == len(frame) and m.pid.nunique() == 24
