"""3DPeS (Baltieri et al., 2011): ~1,000 snapshots of ~190 people from 8 outdoor cameras.

Assumed layout (the re-id snapshot release, as read by DGD's format_3dpes.py):
``RGB/<pid>_<camera>_<rest>.bmp`` (under a ``3DPeS/`` folder or at the archive root): the first
field of the name is the pid, the second the camera (view) number, stored as camid = camera - 1.
Split ``all``. The openvisor.org site that hosted it is gone, so there is no download URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(\d+)_(\d+)_")


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    n = 0
    for m in archive.members():
        if PurePosixPath(m.path).parent.as_posix() != "RGB":
            continue
        hit = _NAME.match(PurePosixPath(m.path).name)
        if hit is None or int(hit.group(2)) < 1:
            raise LayoutError(f"{archive.path}: {m.path!r} is not named <pid>_<camera 1..8>_<frame>.bmp")
        n += 1
        yield make_row("threedpes", m.path, m.data, int(hit.group(1)), int(hit.group(2)) - 1, "all")
    if n == 0:
        raise LayoutError(f"{archive.path}: no images in RGB/ under the 3DPeS folder")


SPEC = register(
    DatasetSpec(
        name="threedpes",
        files=(ArchiveFile("3DPeS_ReId_Snap.zip", url=None),),
        top_folder="3DPeS",
        markers=("RGB",),
        parser=_parse,
        how_to_obtain=(
            "3DPeS's host (http://www.openvisor.org/3dpes.asp, University of Modena) is offline: "
            "ask the authors (Baltieri, Vezzani, Cucchiara) or use an existing copy of the re-id snapshots (RGB/)."
        ),
        homepage="http://www.openvisor.org/3dpes.asp",
    )
)
