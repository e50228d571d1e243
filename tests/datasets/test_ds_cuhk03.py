from __future__ import annotations

import collections

import h5py
import numpy as np
import pytest
import scipy.io
from ds_helpers import pack

from maskreid.datasets.archive import LayoutError
from maskreid.datasets.base import get_dataset
from maskreid.datasets.cuhk03 import NP_FILES, read_np_config
from maskreid.store.shards import decode_image

# pair 1: 2 identities, pair 2: 1 identity; identity (1, 2) lacks its 10th view
SIZES = [2, 1]


def _img(pair, ident, k):
    h, w = 40 + k, 20 + ident
    return np.full((h, w, 3), (pair * 50, ident * 30, k * 10), np.uint8)


def build_mat(path):
    """cuhk-03.mat as MATLAB v7.3 writes it: cells are datasets of object references."""
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        n = [0]

        def put(arr):
            n[0] += 1
            return refs.create_dataset(str(n[0]), data=arr).ref

        for kind in ("labeled", "detected"):
            pair_refs = []
            for pair, size in enumerate(SIZES, start=1):
                cell = np.empty((10, size), dtype=h5py.ref_dtype)  # MATLAB (ids x 10), transposed
                for ident in range(1, size + 1):
                    for k in range(1, 11):
                        empty = (pair, ident, k) == (1, 2, 10)
                        cell[k - 1, ident - 1] = put(np.zeros(2, np.uint64) if empty else _img(pair, ident, k).T)
                pair_refs.append(put(cell))
            f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))
        tests = [put(np.array([[1, 2], [2, 1]], np.float64).T)] * 20  # (pair, identity) rows
        f.create_dataset("testsets", data=np.array([tests], dtype=h5py.ref_dtype))


def build_np(path, names, labels):
    arr = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        arr[i, 0] = n
    idx = lambda xs: np.array([xs], np.uint16).T  # noqa: E731
    scipy.io.savemat(path, {"filelist": arr, "labels": np.array([labels], np.uint16).T,
                            "camId": np.ones((len(names), 1), np.uint8),
                            "train_idx": idx([1, 2]), "query_idx": idx([3]), "gallery_idx": idx([4])})


@pytest.fixture
def release(tmp_path):
    build_mat(tmp_path / "cuhk-03.mat")
    src = pack({"cuhk03_release/cuhk-03.mat": (tmp_path / "cuhk-03.mat").read_bytes()}, tmp_path / "cuhk03_release", "zip")
    npf = tmp_path / NP_FILES["labeled"].name
    build_np(npf, ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "2_001_2_10.png"], [1, 1, 2, 3])
    return src, {npf.name: npf}


def test_cuhk03_mini_release(release):
    src, extra = release
    side: dict = {}
    rows = list(get_dataset("cuhk03_labeled").iter_rows(src, side, extra))
    assert len(rows) == 29  # 3 identities x 10 views, one empty
    by = {r["image_id"]: r for r in rows}
    r = by["cuhk03_labeled/2_001_2_10.png"]
    assert (r["pid"], r["camid"], r["split"], r["width"], r["height"]) == (3, 3, "gallery", 21, 50)
    assert np.array_equal(decode_image(r["image"]), _img(2, 1, 10))  # PNG is lossless
    assert by["cuhk03_labeled/1_002_1_01.png"]["split"] == "query"
    assert collections.Counter(r["split"] for r in rows) == {"all": 25, "train": 2, "query": 1, "gallery": 1}
    assert "cuhk03_labeled/1_002_2_10.png" not in by
    assert side["classic_splits"] == [[2, 3]] * 20


def test_cuhk03_split_file_from_another_release_is_rejected(release, tmp_path):
    src, _ = release
    npf = tmp_path / "np.mat"
    build_np(npf, ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "2_001_2_10.png"], [1, 1, 5, 3])
    with pytest.raises(LayoutError, match="1_002_1_01.png labelled 5"):
        list(get_dataset("cuhk03_labeled").iter_rows(src, {}, {NP_FILES["labeled"].name: npf}))
    with pytest.raises(LayoutError, match="needs cuhk03_new_protocol_config_labeled.mat"):
        list(get_dataset("cuhk03_labeled").iter_rows(src))


@pytest.mark.parametrize("kind,counts", [("labeled", (14096, 7368, 1400, 5328)), ("detected", (14097, 7365, 1400, 5332))])
def test_real_new_protocol_files(shared_dir, kind, counts):
    cfg = read_np_config(shared_dir / "data/protocols/cuhk03_np" / NP_FILES[kind].name)
    c = collections.Counter(cfg["split"].values())
    assert (len(cfg["names"]), c["train"], c["query"], c["gallery"]) == counts
    assert cfg["names"][0] == "1_001_1_01.png" and cfg["names"][-1] == "5_049_2_10.png"
    labels = dict(zip(cfg["names"], cfg["labels"]))
    train_ids = {labels[n] for n, s in cfg["split"].items() if s == "train"}
    test_ids = {labels[n] for n, s in cfg["split"].items() if s != "train"}
    assert (len(train_ids), len(test_ids), len(train_ids & test_ids)) == (767, 700, 0)
    # our pid rule (identities counted over the pairs in order) reproduces the file's labels
    sizes = collections.Counter(int(n.split("_")[0]) for n in {n.rsplit("_", 2)[0] for n in cfg["names"]})
    offsets = np.concatenate([[0], np.cumsum([sizes[p] for p in range(1, 6)])])
    ours = [offsets[int(n.split("_")[0]) - 1] + int(n.split("_")[1]) for n in cfg["names"]]
    assert ours == cfg["labels"].tolist()
