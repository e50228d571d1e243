"""Builders for miniature dataset archives in each dataset's own layout."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np


def image_bytes(ext: str = ".jpg", w: int = 64, h: int = 128, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


def with_garbage(data: bytes, n: int = 200, seed: int = 0) -> bytes:
    """``n`` random bytes inserted in the middle: OpenCV still decodes such a JPEG (libjpeg only
    prints a warning), to a picture with a smeared band."""
    mid = len(data) // 2
    return data[:mid] + np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes() + data[mid:]


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def pack(files: dict[str, bytes], dest: Path, form: str) -> Path:
    """form: 'zip', 'tar.xz', 'tar.gz', 'tar' or 'dir'."""
    if form == "dir":
        return write_tree(dest, files)
    if form == "zip":
        path = dest.with_suffix(".zip")
        with zipfile.ZipFile(path, "w") as zf:
            for rel, data in files.items():
                zf.writestr(rel, data)
        return path
    path = dest.with_name(dest.name + "." + form)
    mode = {"tar": "w", "tar.xz": "w:xz", "tar.gz": "w:gz"}[form]
    staging = write_tree(dest.with_name(dest.name + "_src"), files)
    with tarfile.open(path, mode) as tf:
        for rel in files:
            tf.add(staging / rel, arcname=rel)
    return path


def market_files(top: str = "Market-1501-v15.09.15") -> dict[str, bytes]:
    """A tiny Market: 2 train ids, query of pid 5 (cam 1) and 7 (cam 2), a gallery with junk,
    distractor, same-camera and cross-camera images, gt_bbox and gt_query lists."""
    import io

    import scipy.io

    img = image_bytes()
    f: dict[str, bytes] = {}
    for n in ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0003_c1s1_001051_01.jpg"]:
        f[f"{top}/bounding_box_train/{n}"] = img
    f[f"{top}/bounding_box_train/Thumbs.db"] = b"not an image"
    f[f"{top}/query/0005_c1s1_001051_00.jpg"] = img
    f[f"{top}/query/0007_c2s1_002051_00.jpg.jpg"] = img  # the real archive's doubled extension
    gallery = [
        "-1_c1s1_000401_03.jpg",  # 1 junk
        "0000_c3s1_000551_01.jpg",  # 2 distractor
        "0005_c1s1_001101_02.jpg",  # 3 same pid, same camera as query 5 -> junk
        "0005_c3s1_001201_01.jpg",  # 4 good for query 5
        "0007_c1s1_002101_01.jpg.jpg",  # 5 good for query 7
        "0007_c2s1_002151_01.jpg",  # 6 same camera as query 7 -> junk
    ]
    for n in gallery:
        f[f"{top}/bounding_box_test/{n}"] = img
    f[f"{top}/gt_bbox/0005_c1s1_001051_00.jpg"] = img
    f[f"{top}/gt_bbox/0005_c1s1_001061_00.jpg"] = img
    f[f"{top}/readme.txt"] = b"readme"

    def mat(key: str, idx: list[int]) -> bytes:
        buf = io.BytesIO()
        scipy.io.savemat(buf, {key: np.array([idx], dtype=np.uint16)})
        return buf.getvalue()

    f[f"{top}/gt_query/0005_c1s1_001051_00_good.mat"] = mat("good_index", [4])
    f[f"{top}/gt_query/0005_c1s1_001051_00_junk.mat"] = mat("junk_index", [1, 3])
    f[f"{top}/gt_query/0007_c2s1_002051_00_good.mat"] = mat("good_index", [5])
    f[f"{top}/gt_query/0007_c2s1_002051_00_junk.mat"] = mat("junk_index", [0])  # the release's "empty"
    return f
