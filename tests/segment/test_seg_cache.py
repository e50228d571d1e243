"""segment_dataset + the mask cache: cache hits, resume after an interruption, corrupt rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from maskreid.segment.base import Segmenter, build_segmenter
from maskreid.segment.run import segment_dataset
from maskreid.store.masks import MaskCache, load_masks, read_mask_table
from maskreid.store.shards import CorruptImageError, decode_mask, encode_png, sha256_bytes, write_shards


class CountingSeg(Segmenter):
    """Deterministic fake: person = pixels brighter than the crop's mean; counts crops seen."""

    name = "counting"

    def __init__(self, fail_after: int | None = None):
        self.seen = 0
        self.fail_after = fail_after

    @property
    def fingerprint(self) -> str:
        return "counting-0001"

    def predict(self, batch):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen += len(batch)
        return [(img.mean(2) > img.mean()).astype(np.float32) * 0.8 for img in batch]


def _rows(n: int, seed: int = 0, h: int = 32, w: int = 16):
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        data = encode_png(img)
        yield {"image_id": f"toy/{i:03d}.png", "dataset": "toy", "pid": i // 2, "camid": i % 2,
               "split": "train", "image": data, "sha256": sha256_bytes(data), "width": w, "height": h}


@pytest.fixture()
def shards(tmp_path):
    d = tmp_path / "images"
    write_shards(_rows(25), d, rows_per_shard=10)  # 3 shards: 10, 10, 5
    return d


def test_cache_hit_computes_nothing(shards, tmp_path):
    seg = CountingSeg()
    s1 = segment_dataset(shards, tmp_path / "m1", seg, cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    assert (s1["computed"], s1["cached"], seg.seen) == (25, 0, 25)
    s2 = segment_dataset(shards, tmp_path / "m2", seg, cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    assert (s2["computed"], s2["cached"], seg.seen) == (0, 25, 25)
    t = read_mask_table(tmp_path / "m2").to_pandas()
    assert len(t) == 25 and t["image_id"].is_unique
    meta = json.loads((tmp_path / "m2" / "meta.json").read_text())
    assert meta == {"backend": "counting", "fingerprint": "counting-0001", "threshold": 0.5}
    # stored mask is probability x 255 at the crop's size, fg_fraction at the threshold
    m = decode_mask(t["mask"][0])
    assert m.shape == (32, 16) and set(np.unique(m)) <= {0, 204}
    assert t["fg_fraction"][0] == pytest.approx((m >= 127.5).mean())
    assert len(load_masks(tmp_path / "m2")) == 25


def test_threshold_changes_fg_not_cache(shards, tmp_path):
    seg = CountingSeg()
    segment_dataset(shards, tmp_path / "a", seg, cache_dir=tmp_path / "c", progress=False)
    segment_dataset(shards, tmp_path / "b", seg, cache_dir=tmp_path / "c", threshold=0.9, progress=False)
    assert seg.seen == 25
    fb = read_mask_table(tmp_path / "b").column("fg_fraction").to_numpy()
    assert np.all(fb == 0)  # 0.8 probability is below 0.9


def test_resume_after_interruption(shards, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        segment_dataset(shards, tmp_path / "out", CountingSeg(fail_after=10), cache_dir=cache,
                        batch_size=4, progress=False)
    assert not (tmp_path / "out").exists()
    assert len(MaskCache(cache, "counting-0001").keys()) == 10  # the first shard's part only
    assert not list((cache / "counting-0001").glob(".*tmp*"))
    seg = CountingSeg()
    stats = segment_dataset(shards, tmp_path / "out", seg, cache_dir=cache, batch_size=4, progress=False)
    assert (stats["computed"], stats["cached"], seg.seen) == (15, 10, 15)
    segment_dataset(shards, tmp_path / "ref", CountingSeg(), cache_dir=tmp_path / "cache2", batch_size=4,
                    progress=False)
    a = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    b = pq.read_table(tmp_path / "ref" / "part-00000.parquet")
    assert a.equals(b)


def test_duplicate_bytes_segmented_once(tmp_path):
    rows = list(_rows(4))
    dup = dict(rows[0], image_id="toy/dup.png")
    write_shards(rows + [dup], tmp_path / "img")
    seg = CountingSeg()
    stats = segment_dataset(tmp_path / "img", tmp_path / "m", seg, cache_dir=tmp_path / "c", progress=False)
    assert (stats["images"], stats["unique"], seg.seen) == (5, 4, 4)
    assert len(read_mask_table(tmp_path / "m")) == 5


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_reported_by_id(tmp_path, num_workers):
    rows = list(_rows(6))
    rows[4] = dict(rows[4], image=b"\xff\xd8 truncated", sha256=sha256_bytes(b"\xff\xd8 truncated"))
    write_shards(rows, tmp_path / "img")
    with pytest.raises(CorruptImageError, match="toy/004.png"):
        segment_dataset(tmp_path / "img", tmp_path / "m", CountingSeg(), cache_dir=tmp_path / "c",
                        batch_size=2, num_workers=num_workers, progress=False)
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m")]


def test_ground_truth_backend_roundtrip(tmp_path):
    rows = []
    for r in _rows(3):
        g = np.zeros((32, 16), np.uint8)
        g[8:24, 4:12] = 255
        rows.append(dict(r, gt_mask=encode_png(g)))
    write_shards(rows, tmp_path / "img")
    segment_dataset(tmp_path / "img", tmp_path / "m", build_segmenter({"backend": "ground_truth"}),
                    cache_dir=tmp_path / "c", progress=False)
    t = read_mask_table(tmp_path / "m").to_pandas()
    assert np.allclose(t["fg_fraction"], 16 * 8 / (32 * 16))
    write_shards(list(_rows(2)), tmp_path / "img2")  # no gt_mask (and not cached yet)
    with pytest.raises(ValueError, match="toy/000.png.*gt_mask"):
        segment_dataset(tmp_path / "img2", tmp_path / "m2", {"backend": "ground_truth"},
                        cache_dir=tmp_path / "c2", progress=False)


def test_unknown_backend():
    with pytest.raises(KeyError, match="unknown segmentation backend"):
        build_segmenter({"backend": "nope"})
