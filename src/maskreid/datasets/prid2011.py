"""PRID 2011 (Hirzer et al., SCIA 2011), single-shot version.

Assumed layout (the official ``prid_2011.zip``, as read by DGD's format_prid.py and torchreid):
``prid_2011/single_shot/cam_a/person_XXXX.png`` (385 people) and
``single_shot/cam_b/person_XXXX.png`` (749 people); persons 0001-0200 appear in both cameras,
the others in one camera only (cam_b's extra people are gallery distractors in the protocol).
pid = XXXX, camid 0 (cam_a) / 1 (cam_b), split ``all``. ``multi_shot/`` is not read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from maskreid.datasets.archive import Archive
from maskreid.datasets.base import ArchiveFile, DatasetSpec, register
from maskreid.datasets.viper import two_camera_rows

_NAME = re.compile(r"^person_(\d+)\.png$", re.IGNORECASE)
CAMS = {"single_shot/cam_a": 0, "single_shot/cam_b": 1}


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    yield from two_camera_rows("prid2011", archive, CAMS, _NAME, "person_XXXX.png")


SPEC = register(
    DatasetSpec(
        name="prid2011",
        files=(ArchiveFile("prid_2011.zip", url=None),),
        top_folder="prid_2011",
        markers=("single_shot", "multi_shot"),
        parser=_parse,
        how_to_obtain=(
            "Download prid_2011.zip from the TU Graz PRID 2011 page "
            "(https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/PRID11/), "
            "which asks you to accept its terms first."
        ),
        homepage="https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/PRID11/",
    )
)
