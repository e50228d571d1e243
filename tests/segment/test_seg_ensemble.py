"""The ensemble mask source: the mean of its members, their cached masks reused bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from maskreid.pipeline.segment import _segmenter_cfg
from maskreid.segment.base import Segmenter
from maskreid.segment.ensemble import EnsembleSegmenter, build_mask_source
from maskreid.segment.run import segment_dataset
from maskreid.store.masks import load_masks
from maskreid.store.shards import decode_mask, encode_png, sha256_bytes, write_shards


class Const(Segmenter):
    """Probability ``value`` on the left half, 0 on the right; counts the crops it computed."""

    def __init__(self, value: float, tag: str):
        self.value, self.name, self.seen = value, f"const{tag}", 0

    @property
    def fingerprint(self) -> str:
        return f"const-{self.name}"

    def predict(self, batch):
        self.seen += len(batch)
        out = []
        for img in batch:
            p = np.zeros(img.shape[:2], np.float32)
            p[:, : img.shape[1] // 2] = self.value
            out.append(p)
        return out


def _shards(tmp_path, n=12):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        data = encode_png(rng.integers(0, 256, (24, 12, 3), dtype=np.uint8))
        rows.append({"image_id": f"toy/{i:02d}.png", "dataset": "toy", "pid": i, "camid": 0, "split": "train",
                     "image": data, "sha256": sha256_bytes(data), "width": 12, "height": 24})
    write_shards(rows, tmp_path / "images", rows_per_shard=5)
    return tmp_path / "images"


def test_mean_of_the_members_with_weights():
    img = np.zeros((4, 4, 3), np.uint8)
    equal = EnsembleSegmenter([Const(1.0, "a"), Const(0.2, "b")]).predict([img])[0]
    # each member is first rounded to the cache's 8-bit steps: 0.2 -> 51/255
    np.testing.assert_allclose(equal[:, :2], (1.0 + 51 / 255) / 2, atol=1e-6)
    assert np.all(equal[:, 2:] == 0)
    weighted = EnsembleSegmenter([Const(1.0, "a"), Const(0.0, "b")], weights=[3, 1]).predict([img])[0]
    np.testing.assert_allclose(weighted[:, :2], 0.75, atol=1e-6)
    # the mask cache key changes with the members and with the weights
    fps = {EnsembleSegmenter([Const(1.0, "a"), Const(0.0, "b")]).fingerprint,
           EnsembleSegmenter([Const(1.0, "a"), Const(0.0, "c")]).fingerprint,
           EnsembleSegmenter([Const(1.0, "a"), Const(0.0, "b")], weights=[3, 1]).fingerprint}
    assert len(fps) == 3


def test_bad_ensembles_are_refused():
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleSegmenter([Const(1.0, "a")])
    with pytest.raises(ValueError, match="one non-negative weight per member"):
        EnsembleSegmenter([Const(1.0, "a"), Const(0.5, "b")], weights=[1.0])
    with pytest.raises(KeyError, match=r"\['preset'\] are not options"):
        build_mask_source({"backend": "ensemble", "members": [], "preset": "pose"})


def test_members_cached_masks_are_reused_and_give_the_same_masks(tmp_path):
    images = _shards(tmp_path)
    a, b = Const(0.9, "a"), Const(0.3, "b")
    # the member's own segment stage ran first: its masks are in the cache
    segment_dataset(images, tmp_path / "a", a, cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    assert a.seen == 12
    ens = EnsembleSegmenter([a, b], cache_dir=tmp_path / "cache")
    segment_dataset(images, tmp_path / "ens", ens, cache_dir=tmp_path / "cache", batch_size=4, progress=False)
    assert (a.seen, b.seen) == (12, 12)  # a was read from its cache, b computed
    fresh_a, fresh_b = Const(0.9, "a"), Const(0.3, "b")
    uncached = EnsembleSegmenter([fresh_a, fresh_b])  # no cache: both computed
    segment_dataset(images, tmp_path / "ens2", uncached, cache_dir=tmp_path / "cache2", batch_size=4, progress=False)
    assert (fresh_a.seen, fresh_b.seen) == (12, 12)
    got, want = load_masks(tmp_path / "ens"), load_masks(tmp_path / "ens2")
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in got)
    m = decode_mask(next(iter(got.values())))
    assert m[0, 0] == round(255 * (round(0.9 * 255) + round(0.3 * 255)) / 2 / 255) and m[0, -1] == 0


def test_the_profile_keys_make_a_segmenter_and_preset_ensemble():
    cfg = _segmenter_cfg({"backend": "ensemble", "network": "pose", "checkpoint": "models/s/segmenter.pt",
                          "runtime": "auto"})
    assert cfg == {"backend": "ensemble", "members": [
        {"backend": "smp", "path": "models/s/segmenter.pt", "runtime": "auto"},
        {"backend": "onnx", "preset": "pose"}]}


@pytest.mark.parametrize("cached, match", [(b"not a png", "cannot be decoded"), (None, "5x5 for a 4x4 crop")])
def test_a_bad_cached_member_mask_is_an_error_naming_it_not_a_silent_recompute(cached, match):
    from maskreid.store.shards import CorruptImageError

    img = np.zeros((4, 4, 3), np.uint8)
    a, b = Const(1.0, "a"), Const(0.2, "b")
    ens = EnsembleSegmenter([a, b])
    ens._cached[0] = {"abc": cached if cached is not None else encode_png(np.zeros((5, 5), np.uint8))}
    with pytest.raises(CorruptImageError, match=f"image abc.*{match}|{match}") as err:
        ens.predict_rows([img], [{"sha256": "abc"}])
    assert "abc" in str(err.value) and a.seen == 0  # named, and not recomputed


def test_the_ensemble_reads_the_columns_its_members_need():
    a, b, c = Const(1.0, "a"), Const(0.2, "b"), Const(0.5, "c")
    a.needs_columns, c.needs_columns = ("gt_mask",), ("gt_mask", "other")
    assert EnsembleSegmenter([a, b, c]).needs_columns == ("gt_mask", "other")
