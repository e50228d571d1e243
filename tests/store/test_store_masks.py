"""The mask cache (append-only, keyed by image sha256) and the segment stage's mask shards."""

from __future__ import annotations

import numpy as np
import pytest

from maskreid.store.masks import (
    MaskCache, encode_mask, fg_fraction, load_masks, prob_to_uint8, read_mask_meta, write_mask_shards,
)
from maskreid.store.shards import decode_mask


def test_probabilities_become_uint8_and_the_fg_fraction_by_hand():
    prob = np.array([[0.0, 0.5], [0.501, 1.0]])
    u8 = prob_to_uint8(prob)
    assert u8.tolist() == [[0, 128], [128, 255]]  # round half to even: 127.5 -> 128
    assert fg_fraction(u8, 0.5) == 0.75 and fg_fraction(u8, 0.9) == 0.25
    png, fg = encode_mask(prob)
    assert np.array_equal(decode_mask(png), u8) and fg == 0.75
    with pytest.raises(ValueError, match="HxW"):
        prob_to_uint8(np.zeros((2, 2, 1)))


def test_cache_parts_append_and_read_what_is_wanted(tmp_path):
    cache = MaskCache(tmp_path, "fp1")
    assert cache.keys() == set() and cache.append([], [], []) is None
    cache.append(["a", "b"], [b"A", b"B"], [0.1, 0.2])
    cache.append(["c"], [b"C"], [0.3])
    assert len(cache.parts()) == 2 and cache.keys() == {"a", "b", "c"}
    assert cache.read({"a", "c"}) == {"a": b"A", "c": b"C"}
    assert cache.read() == {"a": b"A", "b": b"B", "c": b"C"}
    assert MaskCache(tmp_path, "fp2").keys() == set()  # another backend fingerprint, another cache


def test_mask_shards_round_trip_with_their_meta(tmp_path):
    rows = [{"image_id": f"toy/{i}", "sha256": f"h{i}", "mask": bytes([i]), "fg_fraction": 0.5} for i in range(3)]
    assert write_mask_shards(rows, tmp_path / "m", {"backend": "toy"}, rows_per_shard=2) == 3
    assert load_masks(tmp_path / "m") == {"h0": b"\x00", "h1": b"\x01", "h2": b"\x02"}
    assert read_mask_meta(tmp_path / "m") == {"backend": "toy"}
    with pytest.raises(FileNotFoundError, match="not a finished segment out"):
        read_mask_meta(tmp_path)
