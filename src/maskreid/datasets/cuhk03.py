"""CUHK03 (Li et al., CVPR 2014) as two datasets, ``cuhk03_labeled`` and ``cuhk03_detected``.

Source: ``cuhk03_release.zip`` (request-only) holding ``cuhk03_release/cuhk-03.mat``, a MATLAB
v7.3 (HDF5) file read with h5py:
  * ``labeled`` / ``detected``: 1x5 cells, one per camera pair; each an (identities x 10) cell
    of images, columns 1-5 from the pair's first camera, 6-10 from its second; an image is a
    uint8 array stored as (3, W, H) (h5py sees MATLAB's transpose); a missing view is an empty
    array (stored as a 2-element dims vector).
  * ``testsets``: 1x20 cell, each a 100x2 matrix of (camera pair, identity) rows, 1-based: the
    classic 20 test splits.
Images become PNG (lossless) named like the new-protocol file lists,
``<pair>_<identity:03d>_<camera 1|2>_<image 01..10>.png``; image_id ``<dataset>/<that name>``.
pid = identities counted over the pairs in order (1..1,467; equals the new protocol's ``labels``,
checked), camid = 2*(pair-1) + camera-1 (0..9).
split from ``cuhk03_new_protocol_config_{labeled,detected}.mat`` (Zhong et al. 2017; fields
filelist, labels, camId, train_idx, query_idx, gallery_idx, 1-based): train / query / gallery;
an image the new protocol does not list gets ``all``. Side file ``classic_splits``: the 20 lists
of test pids.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register
from maskreid.store.shards import encode_png

MAT_NAME = "cuhk-03.mat"
NP_URL = "https://raw.githubusercontent.com/zhunzhong07/person-re-ranking/master/evaluation/data/CUHK03/{}"
NP_FILES = {
    "labeled": ArchiveFile(
        "cuhk03_new_protocol_config_labeled.mat",
        url=NP_URL.format("cuhk03_new_protocol_config_labeled.mat"),
        sha256="15627d0913d59ac61220cf311dbca8b936499265da86c0c036d3b8162a180b9c",
        md5="cd0a6a651ecbbbd7b4af919e2b08c0b1",
    ),
    "detected": ArchiveFile(
        "cuhk03_new_protocol_config_detected.mat",
        url=NP_URL.format("cuhk03_new_protocol_config_detected.mat"),
        sha256="ef438e7775fce6d08ef6dff84d2235bd4bed63850dbbf7025f3251e45c7fa721",
        md5="27237df9b418c99ee4f82ceefa641a91",
    ),
}
RELEASE = ArchiveFile("cuhk03_release.zip", url=None, md5="728939e58ad9f0ff53e521857dd8fb43")


def image_name(pair: int, ident: int, k: int) -> str:
    """1-based pair, identity and image column (1..10) -> the new protocol's file name."""
    return f"{pair}_{ident:03d}_{1 if k <= 5 else 2}_{k:02d}.png"


def read_np_config(path: str | Path) -> dict:
    """New-protocol split file -> {"names": [...], "labels", "camId", "split": {name: split}}."""
    path = Path(path)
    try:
        m = scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as e:
        raise LayoutError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from e
    need = ("filelist", "labels", "camId", "train_idx", "query_idx", "gallery_idx")
    missing = [k for k in need if k not in m]
    if missing:
        raise LayoutError(f"{path}: missing field(s) {', '.join(missing)}; expected {', '.join(need)}")
    names = [str(np.asarray(x).ravel()[0]) for x in m["filelist"].ravel()]
    split: dict[str, str] = {}
    for role in ("train", "query", "gallery"):
        idx = m[f"{role}_idx"].ravel().astype(np.int64)
        if idx.size and (idx.min() < 1 or idx.max() > len(names)):
            raise LayoutError(f"{path}: {role}_idx outside 1..{len(names)}")
        for i in idx:
            if names[i - 1] in split:
                raise LayoutError(f"{path}: {names[i - 1]} is in both {split[names[i - 1]]} and {role}")
            split[names[i - 1]] = role
    return {
        "names": names,
        "labels": m["labels"].ravel().astype(np.int64),
        "camId": m["camId"].ravel().astype(np.int64),
        "split": split,
    }


def _deref(f: h5py.File, ref) -> np.ndarray:
    return f[ref][()].T


def _iter_images(f: h5py.File, kind: str, path: Path) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """(pair, identity, image column, HxWx3 RGB) for every non-empty cell, all 1-based."""
    if kind not in f:
        raise LayoutError(f"{path}: no '{kind}' cell array (keys: {', '.join(sorted(f.keys()))})")
    for pair, pair_ref in enumerate(f[kind][0], start=1):
        cell = _deref(f, pair_ref)  # identities x 10 references
        if cell.ndim != 2 or cell.shape[1] != 10:
            raise LayoutError(f"{path}: {kind}{{{pair}}} has shape {cell.shape}, expected (identities, 10)")
        for ident in range(cell.shape[0]):
            for k in range(10):
                img = _deref(f, cell[ident, k])
                if img.ndim != 3:  # MATLAB empty: a missing view
                    continue
                yield pair, ident + 1, k + 1, img


def pair_sizes(f: h5py.File, kind: str) -> list[int]:
    return [int(f[ref].shape[1]) for ref in f[kind][0]]


def classic_splits(f: h5py.File, offsets: list[int], path: Path) -> list[list[int]]:
    """The 20 classic test splits as lists of global pids."""
    if "testsets" not in f:
        raise LayoutError(f"{path}: no 'testsets' (the classic 20 splits)")
    out = []
    for i, ref in enumerate(f["testsets"][0]):
        pairs = _deref(f, ref).astype(np.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise LayoutError(f"{path}: testsets{{{i + 1}}} has shape {pairs.shape}, expected (n, 2)")
        out.append(sorted(int(offsets[p - 1] + q) for p, q in pairs))
    return out


def _parser(kind: str):
    dataset = f"cuhk03_{kind}"
    np_file = NP_FILES[kind]

    def parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
        if np_file.name not in extra:
            raise LayoutError(
                f"{dataset} needs {np_file.name} (the new-protocol split; {np_file.url}) next to "
                f"{archive.path}: pass it in extra_files or run ingest, which fetches it"
            )
        cfg = read_np_config(extra[np_file.name])
        with tempfile.TemporaryDirectory(prefix="cuhk03-") as tmp:
            mat_path = archive.extract(MAT_NAME, tmp)
            try:
                f = h5py.File(mat_path, "r")
            except OSError as e:
                raise LayoutError(f"{archive.path}: {MAT_NAME} is not a readable HDF5 file ({e})") from e
            with f:
                offsets = np.concatenate([[0], np.cumsum(pair_sizes(f, kind))]).tolist()
                labels = dict(zip(cfg["names"], cfg["labels"]))
                seen = set()
                for pair, ident, k, img in _iter_images(f, kind, mat_path):
                    name = image_name(pair, ident, k)
                    pid = offsets[pair - 1] + ident
                    if name in labels and labels[name] != pid:
                        raise LayoutError(
                            f"{extra[np_file.name]}: {name} labelled {labels[name]}, but it is identity "
                            f"{pid} in {MAT_NAME}: the split file does not belong to this release"
                        )
                    seen.add(name)
                    camid = 2 * (pair - 1) + (0 if k <= 5 else 1)
                    data = encode_png(np.ascontiguousarray(img))
                    yield make_row(dataset, name, data, pid, camid, cfg["split"].get(name, "all"))
                absent = [n for n in cfg["names"] if n not in seen]
                if absent:
                    raise LayoutError(
                        f"{extra[np_file.name]} lists {len(absent)} images missing from {MAT_NAME} "
                        f"({kind}), e.g. {absent[0]}"
                    )
                side["classic_splits"] = classic_splits(f, offsets, mat_path)

    return parse


SPECS = {
    kind: register(
        DatasetSpec(
            name=f"cuhk03_{kind}",
            files=(RELEASE, NP_FILES[kind]),
            top_folder="cuhk03_release",
            markers=(MAT_NAME,),
            parser=_parser(kind),
            how_to_obtain=(
                "CUHK03 is released on request: ask for cuhk03_release.zip via the CUHK "
                "re-identification page (http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html)."
            ),
            homepage="http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html",
            side_names=("classic_splits",),
        )
    )
    for kind in ("labeled", "detected")
}
