"""Market-1501 (Zheng et al., ICCV 2015): the bounding_box layout shared with DukeMTMC-reID.

Layout under ``Market-1501-v15.09.15/``: ``bounding_box_train`` -> train, ``bounding_box_test``
-> gallery (pid -1 junk and pid 0 distractors kept as such), ``query`` -> query, ``gt_bbox`` ->
multiquery (hand-drawn boxes; pid/camera from the name), ``gt_query/<query>_{good,junk}.mat``
-> side file ``gt_query``. File names ``<pid>_c<cam>s<seq>_<frame>_<box>.jpg``; camid = cam - 1.
The real archive holds ``*.jpg.jpg`` names (38) and Thumbs.db files: the former are images like
any other (image_id keeps the name as shipped), the latter are skipped.

gt_query's index lists are 1-based positions in the name-sorted ``bounding_box_test``; they are
resolved to gallery image_ids here so no consumer ever handles positional indices.
"""

from __future__ import annotations

import io
import re
from collections.abc import Container, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from maskreid.datasets.archive import IMAGE_EXTS, Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_IMG_SUFFIX = re.compile(r"(\.(jpe?g|png|bmp))+$", re.IGNORECASE)


def stem(name: str) -> str:
    """File name without its (possibly doubled, ``.jpg.jpg``) image extension."""
    return _IMG_SUFFIX.sub("", name.rsplit("/", 1)[-1])


def parse_name(archive: Archive, rel: str) -> tuple[int, int]:
    m = _NAME.match(rel.rsplit("/", 1)[-1])
    if m is None:
        raise LayoutError(
            f"{archive.path}: {rel!r} is not named <pid>_c<camera>..., as bounding-box layouts are"
        )
    return int(m.group(1)), int(m.group(2)) - 1


def bbox_rows(
    dataset: str, archive: Archive, folders: Mapping[str, str], mats: dict[str, bytes] | None = None
) -> Iterator[dict]:
    """Rows for a bounding-box layout; ``folders`` maps top-level folder -> split. Pass a dict
    as ``mats`` to also collect ``gt_query/*.mat`` bytes in the same archive pass."""
    exts = IMAGE_EXTS | {".mat"} if mats is not None else IMAGE_EXTS
    seen = dict.fromkeys(folders, 0)
    for m in archive.members(exts):
        top, _, rest = m.path.partition("/")
        if not rest or "/" in rest:
            continue  # readme, nested extras: not part of the layout
        if top == "gt_query" and mats is not None and rest.endswith(".mat"):
            mats[rest] = m.data
            continue
        if top not in folders or not any(rest.lower().endswith(e) for e in IMAGE_EXTS):
            continue
        pid, camid = parse_name(archive, m.path)
        seen[top] += 1
        yield make_row(dataset, m.path, m.data, pid, camid, folders[top])
    missing = [f for f, n in seen.items() if n == 0 and f != "gt_bbox"]
    if missing:
        raise LayoutError(f"{archive.path}: no images in {', '.join(missing)}/ under the {dataset} folder")


def gt_query_table(
    dataset: str, archive: Archive, mats: dict[str, bytes], gallery: list[str]
) -> dict[str, dict[str, list[str]]]:
    """Query stem -> {"good"/"junk": gallery image_ids}, from ``<query stem>_{good,junk}.mat``."""
    if not mats:
        raise LayoutError(f"{archive.path}: no gt_query/*.mat files (needed for the gt_query side file)")
    order = sorted(gallery)  # the index lists refer to the name-sorted folder
    ids = np.array([f"{dataset}/bounding_box_test/{n}" for n in order], dtype=object)
    by_stem: dict[str, dict[str, list[str]]] = {}
    for name, data in mats.items():
        m = re.match(r"^(.*)_(good|junk)\.mat$", name)
        if m is None:
            raise LayoutError(f"{archive.path}: unexpected file gt_query/{name}")
        kind = m.group(2)
        try:
            idx = scipy.io.loadmat(io.BytesIO(data))[f"{kind}_index"].ravel().astype(np.int64)
        except (ValueError, KeyError, TypeError) as e:
            raise LayoutError(f"{archive.path}: gt_query/{name} unreadable ({type(e).__name__}: {e})") from e
        if idx.size == 1 and idx[0] == 0:  # the release writes [0] for an empty list (13 junk files)
            idx = idx[:0]
        if idx.size and (idx.min() < 1 or idx.max() > len(ids)):
            raise LayoutError(
                f"{archive.path}: gt_query/{name} indexes {idx.min()}..{idx.max()}, "
                f"outside the {len(ids)} bounding_box_test images"
            )
        by_stem.setdefault(m.group(1), {})[kind] = list(ids[idx - 1])
    return by_stem


def bbox_parser(dataset: str, folders: dict[str, str], with_gt_query: bool):
    def parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
        gallery: list[str] = []  # every file, skipped ones too: gt_query indexes the folder's name order
        queries: dict[str, str] = {}  # stem -> image_id
        skipped: set[str] = set()  # corrupt images left out (ingest's skip_corrupt)
        mats: dict[str, bytes] | None = {} if with_gt_query else None
        for row in bbox_rows(dataset, archive, folders, mats):
            rel = row["image_id"][len(dataset) + 1 :]
            if rel.startswith("bounding_box_test/"):
                gallery.append(rel.split("/", 1)[1])
            elif rel.startswith("query/"):
                queries[stem(rel)] = row["image_id"]
            if "corrupt" in row:
                skipped.add(row["image_id"])
            yield row
        if with_gt_query:
            side["gt_query"] = _resolve_gt_query(dataset, archive, mats, gallery, queries, skipped)

    return parse


def _resolve_gt_query(
    dataset: str, archive: Archive, mats: dict[str, bytes], gallery: list[str], queries: dict[str, str],
    skipped: Container[str] = frozenset(),
) -> pd.DataFrame:
    """The good/junk table by query id; ``skipped`` (corrupt) images are left out of it."""
    by_stem = gt_query_table(dataset, archive, mats, gallery)
    unknown = sorted(set(by_stem) - set(queries))
    if unknown:
        raise LayoutError(f"{archive.path}: gt_query lists for {len(unknown)} unknown queries, e.g. {unknown[0]}")
    lacking = [q for q, d in by_stem.items() if set(d) != {"good", "junk"}]
    if lacking:
        raise LayoutError(f"{archive.path}: gt_query/{lacking[0]}: needs both _good.mat and _junk.mat")
    qs = [q for q in sorted(by_stem) if queries[q] not in skipped]
    return pd.DataFrame(
        {
            "query_id": [queries[q] for q in qs],
            "good": [[i for i in by_stem[q]["good"] if i not in skipped] for q in qs],
            "junk": [[i for i in by_stem[q]["junk"] if i not in skipped] for q in qs],
        }
    )


FOLDERS = {
    "bounding_box_train": "train",
    "bounding_box_test": "gallery",
    "query": "query",
    "gt_bbox": "multiquery",
}

SPEC = register(
    DatasetSpec(
        name="market1501",
        files=(ArchiveFile("Market-1501-v15.09.15.zip", url=None, md5="65005ab7d12ec1c44de4eeafe813e68a"),),
        top_folder="Market-1501-v15.09.15",
        markers=("bounding_box_train", "bounding_box_test", "query", "gt_bbox", "gt_query"),
        parser=bbox_parser("market1501", FOLDERS, with_gt_query=True),
        how_to_obtain=(
            "Market-1501 is no longer served from its original URL and its licence forbids "
            "redistribution: request Market-1501-v15.09.15.zip from the authors "
            "(https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html) or use your institution's copy."
        ),
        junk_pids=True,
        homepage="https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html",
        side_names=("gt_query",),
    )
)
