"""The real archives in ../shared/data/reid: counts from the papers and Market's gt_query.
Each archive is read once per session (module-scoped fixtures)."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pytest

from maskreid.datasets.base import get_dataset

pytestmark = pytest.mark.real


def _read(shared_dir, name, archive):
    path = shared_dir / "data/reid" / archive
    if not path.exists():
        pytest.skip(f"{path} not present")
    side: dict = {}
    rows = []
    for r in get_dataset(name).iter_rows(path, side):
        r = dict(r)
        del r["image"]  # keep the session light
        rows.append(r)
    return pd.DataFrame(rows), side


@pytest.fixture(scope="module")
def market(shared_dir):
    return _read(shared_dir, "market1501", "market1501.tar.xz")


@pytest.fixture(scope="module")
def duke(shared_dir):
    return _read(shared_dir, "dukemtmc_reid", "dukemtmc_reid.tar.xz")


def _count(frame, split):
    part = frame[frame["split"] == split]
    return len(part), part["pid"].nunique()


def test_market_counts(market):
    f, _ = market
    assert _count(f, "train") == (12936, 751)
    assert _count(f, "query") == (3368, 750)
    g = f[f["split"] == "gallery"]
    assert (len(g), (g["pid"] == -1).sum(), (g["pid"] == 0).sum()) == (19732, 3819, 2798)
    assert _count(f, "multiquery") == (12692, 750)
    assert f["image_id"].is_unique and f["camid"].between(0, 5).all()
    assert (f["image_id"].str.endswith(".jpg.jpg")).sum() == 38


def test_market_gt_query_good_equals_pid_other_camera(market):
    f, side = market
    gt = side["gt_query"]
    assert len(gt) == 3368
    q = f[f["split"] == "query"].set_index("image_id").loc[gt["query_id"]]
    g = f[f["split"] == "gallery"].set_index("image_id")
    gpid, gcam = g["pid"].to_numpy(), g["camid"].to_numpy()
    expect = (q["pid"].to_numpy()[:, None] == gpid[None]) & (q["camid"].to_numpy()[:, None] != gcam[None]) & (gpid[None] != -1)
    pos = pd.Series(np.arange(len(g)), index=g.index)
    got = np.zeros_like(expect)
    rows = np.repeat(np.arange(len(gt)), gt["good"].map(len))
    got[rows, pos.loc[np.concatenate(gt["good"].to_list())].to_numpy()] = True
    assert (got == expect).all()


def test_duke_counts(duke):
    f, _ = duke
    assert _count(f, "train") == (16522, 702)
    assert _count(f, "query") == (2228, 702)
    assert len(f[f["split"] == "gallery"]) == 17661


def test_viper_counts(shared_dir):
    f, _ = _read(shared_dir, "viper", "viper.tar.xz")
    assert (len(f), f["pid"].nunique()) == (1264, 632)
    assert collections.Counter(f["camid"]) == {0: 632, 1: 632}
    assert (f.groupby("pid")["camid"].nunique() == 2).all()
    assert set(zip(f["width"], f["height"])) == {(48, 128)}
