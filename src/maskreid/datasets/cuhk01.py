"""CUHK01 (Li et al., ACCV 2012): 971 identities, 4 images each from two camera views.

Assumed layout (``CUHK01.zip`` as read by DGD's format_cuhk01.py and torchreid):
``campus/NNNNXXX.png`` where NNNN is the pid (0001-0971) and XXX the image number 001-004;
images 001-002 are camera A (camid 0), 003-004 camera B (camid 1). Split ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(\d{4})(\d{3})\.png$", re.IGNORECASE)


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    for m in archive.members():
        if "/" in m.path:
            continue
        hit = _NAME.match(m.path)
        if hit is None:
            raise LayoutError(f"{archive.path}: {m.path!r} is not named NNNNXXX.png (pid, view 001-004)")
        view = int(hit.group(2))
        if not 1 <= view <= 4:
            raise LayoutError(f"{archive.path}: {m.path!r}: view {view} outside 001-004")
        yield make_row("cuhk01", m.path, m.data, int(hit.group(1)), (view - 1) // 2, "all")


SPEC = register(
    DatasetSpec(
        name="cuhk01",
        files=(ArchiveFile("CUHK01.zip", url=None, md5="e6d55c0da26d80cda210a2edeb448e98"),),
        top_folder="campus",
        markers=(re.compile(r"^\d{7}\.png$", re.IGNORECASE),),
        parser=_parse,
        how_to_obtain=(
            "CUHK01 is released on request: ask for CUHK01.zip via the CUHK re-identification page "
            "(http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html)."
        ),
        homepage="http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html",
    )
)
