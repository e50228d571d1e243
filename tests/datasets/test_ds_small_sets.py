from __future__ import annotations

import pytest
from ds_helpers import image_bytes, pack

from maskreid.datasets.archive import LayoutError
from maskreid.datasets.base import get_dataset


def rows_of(name, files, tmp_path, form="zip"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return sorted((r["image_id"], r["pid"], r["camid"], r["split"]) for r in get_dataset(name).iter_rows(pack(files, tmp_path / name, form)))


def test_viper(tmp_path):
    b = image_bytes(".bmp", 48, 128)
    files = {"VIPeR/cam_a/000_45.bmp": b, "VIPeR/cam_a/012_0.bmp": b, "VIPeR/cam_b/000_90.bmp": b, "VIPeR/cam_b/012_180.bmp": b}
    assert rows_of("viper", files, tmp_path, "tar.xz") == [
        ("viper/cam_a/000_45.bmp", 0, 0, "all"), ("viper/cam_a/012_0.bmp", 12, 0, "all"),
        ("viper/cam_b/000_90.bmp", 0, 1, "all"), ("viper/cam_b/012_180.bmp", 12, 1, "all")]


def test_prid_single_shot_only(tmp_path):
    p = image_bytes(".png", 64, 128)
    files = {"prid_2011/single_shot/cam_a/person_0001.png": p, "prid_2011/single_shot/cam_b/person_0001.png": p,
             "prid_2011/single_shot/cam_b/person_0749.png": p, "prid_2011/multi_shot/cam_a/person_0001/0001.png": p}
    assert rows_of("prid2011", files, tmp_path) == [
        ("prid2011/single_shot/cam_a/person_0001.png", 1, 0, "all"),
        ("prid2011/single_shot/cam_b/person_0001.png", 1, 1, "all"),
        ("prid2011/single_shot/cam_b/person_0749.png", 749, 1, "all")]


def test_cuhk01_views_to_cameras(tmp_path):
    p = image_bytes(".png", 60, 160)
    files = {f"campus/0971{v:03d}.png": p for v in range(1, 5)}
    got = rows_of("cuhk01", files, tmp_path, "dir")
    assert [(pid, cam) for _, pid, cam, _ in got] == [(971, 0), (971, 0), (971, 1), (971, 1)]
    with pytest.raises(LayoutError, match="view 5 outside"):
        rows_of("cuhk01", {"campus/0001005.png": p}, tmp_path / "x")


def test_ilids_pid_from_name_camera_unknown(tmp_path):
    j = image_bytes(".jpg")
    files = {"i-LIDS_Pedestrian/Persons/0001001.jpg": j, "i-LIDS_Pedestrian/Persons/0119004.jpg": j}
    assert [(pid, cam) for _, pid, cam, _ in rows_of("ilids", files, tmp_path, "tar.gz")] == [(1, -1), (119, -1)]
    with pytest.raises(LayoutError, match=r"Persons/img1\.jpg.*NNNNXXX"):
        rows_of("ilids", {"i-LIDS_Pedestrian/Persons/img1.jpg": j}, tmp_path / "y")


def test_threedpes_and_shinpuhkan(tmp_path):
    b = image_bytes(".bmp")
    got = rows_of("threedpes", {"3DPeS/RGB/12_3_00017.bmp": b, "3DPeS/RGB/12_8_00020.bmp": b}, tmp_path)
    assert [(pid, cam) for _, pid, cam, _ in got] == [(12, 2), (12, 7)]
    j = image_bytes(".jpg")
    got = rows_of("shinpuhkan", {"Shinpuhkan2014dataset/images/001_16_0001.jpg": j,
                                  "Shinpuhkan2014dataset/images/024/024_01_0002.jpg": j}, tmp_path / "s")
    assert [(pid, cam) for _, pid, cam, _ in got] == [(1, 15), (24, 0)]
