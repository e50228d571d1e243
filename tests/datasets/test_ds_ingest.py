from __future__ import annotations

import pandas as pd
import pytest
from ds_helpers import market_files, pack

from maskreid.datasets.card import dataset_card
from maskreid.datasets.ingest import ingest, read_side_file
from maskreid.store.shards import CorruptImageError, read_frame, shard_paths


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
