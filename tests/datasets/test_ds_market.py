from __future__ import annotations

import collections

import cv2
import numpy as np
import pytest
from ds_helpers import image_bytes, market_files, pack, with_garbage

from maskreid.datasets.archive import LayoutError
from maskreid.datasets.base import get_dataset
from maskreid.store.shards import CorruptImageError, decode_image

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


def test_garbage_inside_a_jpeg_is_reported_by_its_path(tmp_path, capfd):
    """200 garbage bytes in the middle of a JPEG: OpenCV decoded it and libjpeg only printed
    `Corrupt JPEG data: ... extraneous bytes before marker 0xd9`, so the image was kept."""
    files = market_files()
    bad = "Market-1501-v15.09.15/bounding_box_test/0005_c3s1_001201_01.jpg"
    files[bad] = with_garbage(files[bad])
    assert cv2.imdecode(np.frombuffer(files[bad], np.uint8), cv2.IMREAD_COLOR) is not None  # the trap
    assert "Corrupt JPEG data" in capfd.readouterr().err  # ...and all OpenCV says about it
    src = pack(files, tmp_path / "market", "zip")
    with pytest.raises(CorruptImageError, match=r"'market1501/bounding_box_test/0005_c3s1_001201_01\.jpg': "
                       r"damaged JPEG data \(libjpeg: Corrupt JPEG data: \d+ extraneous bytes"):
        list(get_dataset(M).iter_rows(src))
    assert "Corrupt JPEG" not in capfd.readouterr().err  # in the error, not loose on stderr


def test_strict_decoding_passes_valid_images_and_other_stderr_text(capfd):
    """The check reads libjpeg's warnings off stderr: valid JPEG, PNG and BMP decode the same as
    without it, and anything else written to stderr meanwhile is passed on."""
    for ext in (".jpg", ".png", ".bmp"):
        data = image_bytes(ext, seed=3)
        np.testing.assert_array_equal(decode_image(data, "x", strict=True), decode_image(data, "x"))
    import maskreid.store.shards as shards

    real = shards.cv2.imdecode

    def chatty(buf, flags):
        import os

        os.write(2, b"some other library's notice\n")
        return real(buf, flags)

    shards.cv2.imdecode = chatty
    try:
        decode_image(image_bytes(".jpg"), "x", strict=True)
    finally:
        shards.cv2.imdecode = real
    assert capfd.readouterr().err == "some other library's notice\n"


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
