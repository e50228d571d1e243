from __future__ import annotations

import json
import logging
import os

import pandas as pd
import pytest
from ds_helpers import market_files, pack, with_garbage

from maskreid.datasets.card import dataset_card
from maskreid.datasets.ingest import ingest, read_side_file, write_side_file
from maskreid.store.shards import CorruptImageError, read_frame, shard_paths


def test_json_side_files_keep_the_bytes_of_the_former_writer(tmp_path):
    """ingest's own JSON writer gave way to maskreid.io.write_json: the side files (in the images
    out, so in dvc.lock) keep their bytes: keys sorted, indent 2, ASCII escapes, one newline."""
    obj = {"zeta": [3, 1.5, None], "alpha": {"y": True, "b": "ü"}, "mid": []}
    path = write_side_file("split_ids", obj, tmp_path)
    assert path.read_bytes() == (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    assert os.listdir(tmp_path) == ["split_ids.json"]


def test_ingest_market_shards_side_file_and_card(tmp_path):
    src = pack(market_files(), tmp_path / "market", "tar.xz")
    out = tmp_path / "images" / "market1501"
    card = ingest("market1501", src, out, archives_dir=tmp_path / "archives", rows_per_shard=5)
    frame = read_frame(out, ["image_id", "pid", "split"])
    assert len(frame) == 13 and len(shard_paths(out)) == 3
    assert frame["image_id"].is_monotonic_increasing
    gt = read_side_file(out, "gt_query")
    assert len(gt) == 2 and (out / "gt_query.parquet").exists()
    g = card["splits"]["gallery"]
    assert (g["images"], g["junk"], g["distractors"], g["identities"]) == (6, 1, 1, 4)
    assert card["splits"]["query"]["most_common_wh"] == "64x128"
    # the same dataset from a zip gives the same shard contents
    out2 = tmp_path / "images" / "m2"
    ingest("market1501", pack(market_files(), tmp_path / "m", "zip"), out2, archives_dir=tmp_path / "archives")
    assert read_frame(out2).equals(read_frame(out))


def test_failed_ingest_leaves_previous_output(tmp_path):
    out = tmp_path / "images" / "market1501"
    ingest("market1501", pack(market_files(), tmp_path / "good", "zip"), out, archives_dir=tmp_path / "a")
    before = read_frame(out, ["image_id"])
    files = market_files()
    files["Market-1501-v15.09.15/query/0005_c1s1_001051_00.jpg"] = b"\xff\xd8broken"
    with pytest.raises(CorruptImageError, match="query/0005_c1s1_001051_00.jpg"):
        ingest("market1501", pack(files, tmp_path / "bad", "zip"), out, archives_dir=tmp_path / "a")
    assert read_frame(out, ["image_id"]).equals(before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["market1501"]


def test_card_hand_counts():
    f = pd.DataFrame({"dataset": "x", "split": ["train", "train", "gallery", "gallery", "gallery"],
                      "pid": [1, 2, -1, 0, 0], "camid": [0, 1, 0, 0, 1],
                      "width": [64, 64, 64, 48, 64], "height": [128, 128, 128, 100, 128]})
    c = dataset_card(f)
    assert c["splits"]["gallery"] == {"images": 3, "identities": 2, "cameras": 2, "junk": 1, "distractors": 2,
                                      "min_wh": [48, 100], "max_wh": [64, 128], "most_common_wh": "64x128"}
    assert dataset_card(f, junk_pids=False)["splits"]["train"]["junk"] is None


def test_a_killed_ingest_leaves_nothing_in_the_tracked_folder(tmp_path, monkeypatch):
    """SIGKILL skips every cleanup: simulated by a failure with rmtree disabled. The debris lies
    outside data/images (a dep of every pre-training stage) and the next ingest removes it."""
    import maskreid.datasets.ingest as ingest_mod
    import maskreid.store.shards as shards_mod

    out = tmp_path / "images" / "market1501"

    def killed(*a, **k):
        raise KeyboardInterrupt("killed after the shards were written")

    with monkeypatch.context() as m:
        m.setattr(ingest_mod.shutil, "rmtree", lambda *a, **k: None)
        m.setattr(shards_mod.shutil, "rmtree", lambda *a, **k: None)
        m.setattr(ingest_mod, "write_side_file", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest("market1501", pack(market_files(), tmp_path / "m", "zip"), out, archives_dir=tmp_path / "a",
                   rows_per_shard=5)
    assert not (tmp_path / "images").exists() or list((tmp_path / "images").iterdir()) == []
    debris = tmp_path / ".images.staging"
    assert any(debris.iterdir())
    ingest("market1501", pack(market_files(), tmp_path / "good", "zip"), out, archives_dir=tmp_path / "a")
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["market1501"]
    assert list(debris.iterdir()) == []


TOP = "Market-1501-v15.09.15"
GARBLED = f"{TOP}/bounding_box_test/0005_c3s1_001201_01.jpg"  # query 5's only good match
TRUNCATED = f"{TOP}/bounding_box_train/0003_c1s1_001051_01.jpg"
BAD_QUERY = f"{TOP}/query/0007_c2s1_002051_00.jpg.jpg"


def _damaged_market() -> dict[str, bytes]:
    files = market_files()
    files[GARBLED] = with_garbage(files[GARBLED])
    files[TRUNCATED] = files[TRUNCATED][:200]
    files[BAD_QUERY] = b"\xff\xd8broken"
    return files


def test_skip_corrupt_leaves_corrupt_images_out_and_names_them_in_the_card(tmp_path, caplog):
    src = pack(_damaged_market(), tmp_path / "bad", "zip")
    out = tmp_path / "images" / "market1501"
    with caplog.at_level(logging.WARNING, logger="maskreid"):
        card = ingest("market1501", src, out, archives_dir=tmp_path / "a", skip_corrupt=True)
    skipped = sorted("market1501/" + p.split("/", 1)[1] for p in (GARBLED, TRUNCATED, BAD_QUERY))
    assert card["corrupt_skipped"] == 3 and card["corrupt_images"] == skipped
    assert card["images"] == 10 and card["splits"]["gallery"]["images"] == 5
    assert all(any(i in r.getMessage() for r in caplog.records) for i in skipped)  # each reason logged
    # the other images exactly as from the intact archive
    clean = tmp_path / "images" / "clean"
    ingest("market1501", pack(market_files(), tmp_path / "good", "zip"), clean, archives_dir=tmp_path / "a")
    kept = read_frame(clean)
    kept = kept[~kept["image_id"].isin(skipped)].reset_index(drop=True)
    assert read_frame(out).equals(kept)
    # gt_query names no skipped image: query 7 is gone, query 5 keeps its junk but lost its good one
    gt = read_side_file(out, "gt_query").set_index("query_id")
    assert list(gt.index) == ["market1501/query/0005_c1s1_001051_00.jpg"]
    assert list(gt.iloc[0]["good"]) == [] and len(gt.iloc[0]["junk"]) == 2


def test_without_skip_corrupt_the_first_corrupt_image_stops_the_ingest(tmp_path):
    src = pack(_damaged_market(), tmp_path / "bad", "zip")
    out = tmp_path / "images" / "market1501"
    with pytest.raises(CorruptImageError, match=r"market1501/.*ingest\.skip_corrupt: true skips"):
        ingest("market1501", src, out, archives_dir=tmp_path / "a")
    assert not out.exists()


def test_skip_corrupt_on_an_intact_archive_changes_no_byte(tmp_path):
    src = pack(market_files(), tmp_path / "good", "zip")
    strict = ingest("market1501", src, tmp_path / "strict", archives_dir=tmp_path / "a", rows_per_shard=5)
    skip = ingest("market1501", src, tmp_path / "skip", archives_dir=tmp_path / "a", rows_per_shard=5,
                  skip_corrupt=True)
    names = sorted(p.name for p in (tmp_path / "strict").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "skip").iterdir()) and "gt_query.parquet" in names
    for name in names:
        assert (tmp_path / "skip" / name).read_bytes() == (tmp_path / "strict" / name).read_bytes(), name
    assert (skip.pop("corrupt_skipped"), skip.pop("corrupt_images")) == (0, [])
    assert "corrupt_skipped" not in strict  # the strict card is as before
    assert {**skip, "ingest_seconds": 0} == {**strict, "ingest_seconds": 0}
