"""Shinpuhkan2014 (Kawanishi et al., FCV 2014): 24 people seen by 16 cameras; request-only.

Assumed layout (as read by DGD's format_shinpuhkan.py): ``images/`` holding
``PPP_CC_<rest>.jpg`` (PPP the 1-based person, CC the 1-based camera), possibly in one
sub-folder per person (``images/<person>/PPP_CC_...jpg``); camid = CC - 1; split ``all``
(the method uses this set only for pre-training).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(\d{3})_(\d{2})")


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    n = 0
    for m in archive.members():
        if not m.path.startswith("images/"):
            continue
        hit = _NAME.match(PurePosixPath(m.path).name)
        if hit is None or int(hit.group(2)) < 1:
            raise LayoutError(f"{archive.path}: {m.path!r} is not named PPP_CC_<rest>.jpg (person, camera 01-16)")
        n += 1
        yield make_row("shinpuhkan", m.path, m.data, int(hit.group(1)), int(hit.group(2)) - 1, "all")
    if n == 0:
        raise LayoutError(f"{archive.path}: no images under images/ in the Shinpuhkan folder")


SPEC = register(
    DatasetSpec(
        name="shinpuhkan",
        files=(ArchiveFile("Shinpuhkan2014dataset.zip", url=None),),
        top_folder="Shinpuhkan2014dataset",
        markers=("images",),
        parser=_parse,
        how_to_obtain=(
            "Shinpuhkan2014 is distributed on request by its authors (Kawanishi et al., Nagoya University, "
            "http://www.murase.is.i.nagoya-u.ac.jp/shinpuhkan/): sign their agreement and ask for the archive."
        ),
        homepage="http://www.murase.is.i.nagoya-u.ac.jp/shinpuhkan/",
    )
)
