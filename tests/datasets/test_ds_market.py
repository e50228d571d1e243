from __future__ import annotations

import collections

import pytest
from ds_helpers import image_bytes, market_files, pack

from maskreid.datasets.archive import LayoutError
from maskreid.datasets.base import get_dataset
from maskreid.store.shards import CorruptImageError

M = "market1501"


@pytest.mark.parametrize("form", ["zip", "tar.xz", "dir"])
def test_market_rows_in_every_form(tmp_path, form):
    src = pack(market_files(), tmp_path / "market", form)
    side: dict = {}
    rows = {r["image_id"]: r for r in get_dataset(M).iter_rows(src, side)}
    splits = collections.Counter(r["split"] for r in rows.values())
    assert splits == {"train": 3, "query": 2, "gallery": 6, "multiquery": 2}
    g = rows[f"{M}/bounding_box_test/-1_c1s1_000401_03.jpg"]
    assert (g["pid"], g["camid"], g["split"]) == (-1, 0, "gallery")
    assert rows[f"{M}/bounding_box_test/0000_c3s1_000551_01.jpg"]["pid"] == 0
    q = rows[f"{M}/query/0007_c2s1_002051_00.jpg.jpg"]  # doubled extension kept, parsed
    assert (q["pid"], q["camid"], q["width"], q["height"]) == (7, 1, 64, 128)
    assert len(q["sha256"]) == 64
    gt = side["gt_query"].set_index("query_id")
    assert gt.loc[f"{M}/query/0005_c1s1_001051_00.jpg", "good"] == [f"{M}/bounding_box_test/0005_c3s1_001201_01.jpg"]
    assert gt.loc[f"{M}/query/0005_c1s1_001051_00.jpg", "junk"] == [
        f"{M}/bounding_box_test/-1_c1s1_000401_03.jpg", f"{M}/bounding_box_test/0005_c1s1_001101_02.jpg"]
    assert gt.loc[f"{M}/query/0007_c2s1_002051_00.jpg.jpg", "good"] == [f"{M}/bounding_box_test/0007_c1s1_002101_01.jpg.jpg"]
    assert gt.loc[f"{M}/query/0007_c2s1_002051_00.jpg.jpg", "junk"] == []


def test_truncated_image_is_reported_by_its_path(tmp_path):
    files = market_files()
    bad = "Market-1501-v15.09.15/bounding_box_train/0003_c1s1_001051_01.jpg"
    files[bad] = files[bad][:200]
    src = pack(files, tmp_path / "market", "zip")
    with pytest.raises(CorruptImageError, match="market1501/bounding_box_train/0003_c1s1_001051_01.jpg"):
        list(get_dataset(M).iter_rows(src))


def test_misnamed_image_and_missing_folder_are_precise(tmp_path):
    files = market_files()
    files["Market-1501-v15.09.15/query/person1.jpg"] = image_bytes()
    with pytest.raises(LayoutError, match=r"query/person1\.jpg.*<pid>_c<camera>"):
        list(get_dataset(M).iter_rows(pack(files, tmp_path / "a", "zip")))
    files = {k: v for k, v in market_files().items() if "/query/" not in k}
    with pytest.raises(LayoutError, match="no images in query/"):
        list(get_dataset(M).iter_rows(pack(files, tmp_path / "b", "zip")))


def test_gt_query_index_out_of_range_is_an_error(tmp_path):
    import io

    import numpy as np
    import scipy.io

    files = market_files()
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"good_index": np.array([[99]], np.uint16)})
    files["Market-1501-v15.09.15/gt_query/0005_c1s1_001051_00_good.mat"] = buf.getvalue()
    with pytest.raises(LayoutError, match=r"0005_c1s1_001051_00_good\.mat indexes 99\.\.99"):
        list(get_dataset(M).iter_rows(pack(files, tmp_path / "m", "dir")))


def test_duke_layout(tmp_path):
    img = image_bytes()
    files = {f"DukeMTMC-reID/bounding_box_train/0001_c2_f0046182.jpg": img,
             f"DukeMTMC-reID/bounding_box_test/0000_c1_f0000001.jpg": img,
             f"DukeMTMC-reID/bounding_box_test/0005_c3_f0000002.jpg": img,
             f"DukeMTMC-reID/query/0005_c8_f0000003.jpg": img,
             f"DukeMTMC-reID/README.md": b"r"}
    rows = list(get_dataset("dukemtmc_reid").iter_rows(pack(files, tmp_path / "duke", "tar.xz")))
    got = sorted((r["split"], r["pid"], r["camid"]) for r in rows)
    assert got == [("gallery", 0, 0), ("gallery", 5, 2), ("query", 5, 7), ("train", 1, 1)]
