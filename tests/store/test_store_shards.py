"""Parquet image shards: round trip, atomic folder swap, and decoding errors that name the image."""

from __future__ import annotations

import numpy as np
import pytest

from maskreid.store.shards import (
    IMAGE_SCHEMA, CorruptImageError, decode_image, decode_mask, encode_png, read_frame, sha256_bytes,
    shard_paths, write_shards,
)


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = encode_png(rng.integers(0, 256, (8, 4, 3), dtype=np.uint8))
        out.append({"image_id": f"toy/{i:03d}.png", "dataset": "toy", "pid": i // 2, "camid": i % 2,
                    "split": "train", "image": img, "sha256": sha256_bytes(img), "width": 4, "height": 8})
    return out


def test_rows_round_trip_across_shards_in_order(tmp_path):
    rows = _rows(5)
    assert write_shards(rows, tmp_path / "s", rows_per_shard=2) == 5
    assert [p.name for p in shard_paths(tmp_path / "s")] == ["part-00000.parquet", "part-00001.parquet",
                                                             "part-00002.parquet"]
    df = read_frame(tmp_path / "s")
    assert list(df.image_id) == [r["image_id"] for r in rows]
    assert [bytes(b) for b in df.image] == [r["image"] for r in rows]
    assert df.gt_mask.isna().all()  # a nullable field left out of the rows is null
    assert list(read_frame(tmp_path / "s", ["image_id", "pid"]).columns) == ["image_id", "pid"]


def test_an_empty_set_still_has_the_schema(tmp_path):
    assert write_shards([], tmp_path / "e") == 0
    assert list(read_frame(tmp_path / "e").columns) == IMAGE_SCHEMA.names


def test_a_failed_write_keeps_the_previous_folder_and_leaves_no_temp(tmp_path):
    write_shards(_rows(3), tmp_path / "s")

    def broken():
        yield from _rows(2, seed=1)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        write_shards(broken(), tmp_path / "s", rows_per_shard=1)
    assert list(read_frame(tmp_path / "s").image_id) == [r["image_id"] for r in _rows(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_a_folder_without_shards_names_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro ingest"):
        shard_paths(tmp_path)


def test_decoding_errors_name_the_image():
    with pytest.raises(CorruptImageError, match="'toy/a.jpg': empty bytes"):
        decode_image(b"", "toy/a.jpg")
    with pytest.raises(CorruptImageError, match="'toy/b.jpg': cannot be decoded"):
        decode_image(b"not an image at all", "toy/b.jpg")
    with pytest.raises(CorruptImageError, match="mask 'k'"):
        decode_mask(b"\x89PNG broken", "k")


def test_png_round_trips_are_lossless_and_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 3, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(encode_png(rgb)), rgb)  # RGB in, RGB out (not OpenCV's BGR)
    m = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    assert np.array_equal(decode_mask(encode_png(m)), m)
