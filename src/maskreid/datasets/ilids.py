"""QMUL i-LIDS (Zheng et al., BMVC 2009; from the i-LIDS MCTS footage): 119 identities, 476 images.

Assumed layout (``i-LIDS_Pedestrian.tgz`` as read by DGD's format_ilids.py and torchreid):
``i-LIDS_Pedestrian/Persons/NNNNXXX.jpg`` where NNNN is the pid and XXX the image number.
The release does not say which camera took an image, so camid is -1 (unknown) for every row;
maskreid.splits assigns probe/gallery images per identity with its seed (DGD split them randomly).
Split ``all``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(\d{4})(\d{3})\.jpe?g$", re.IGNORECASE)
UNKNOWN_CAMERA = -1


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    n = 0
    for m in archive.members():
        if PurePosixPath(m.path).parent.as_posix() != "Persons":
            continue
        hit = _NAME.match(PurePosixPath(m.path).name)
        if hit is None:
            raise LayoutError(f"{archive.path}: {m.path!r} is not named NNNNXXX.jpg (pid, image number)")
        n += 1
        yield make_row("ilids", m.path, m.data, int(hit.group(1)), UNKNOWN_CAMERA, "all")
    if n == 0:
        raise LayoutError(f"{archive.path}: no images in Persons/ under the i-LIDS folder")


SPEC = register(
    DatasetSpec(
        name="ilids",
        files=(ArchiveFile("i-LIDS_Pedestrian.tgz", url="http://www.eecs.qmul.ac.uk/~jason/data/i-LIDS_Pedestrian.tgz"),),
        top_folder="i-LIDS_Pedestrian",
        markers=("Persons",),
        parser=_parse,
        how_to_obtain=(
            "i-LIDS_Pedestrian.tgz was published at http://www.eecs.qmul.ac.uk/~jason/data/i-LIDS_Pedestrian.tgz "
            "(QMUL); the i-LIDS footage itself is licensed by the UK Home Office."
        ),
    )
)
