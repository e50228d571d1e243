"""VIPeR (Gray et al., PETS 2007): 632 identities, one 48x128 BMP per camera.

Layout under ``VIPeR/``: ``cam_a/NNN_<angle>.bmp`` and ``cam_b/NNN_<angle>.bmp``; pairs match by
the index NNN, which is the pid (the dataset's own id, 0..631 in the release); camid 0 for
cam_a, 1 for cam_b; split ``all`` (train/test halves are drawn by maskreid.splits).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from maskreid.datasets.archive import Archive, LayoutError
from maskreid.datasets.base import ArchiveFile, DatasetSpec, make_row, register

_NAME = re.compile(r"^(\d+)_")
CAMS = {"cam_a": 0, "cam_b": 1}


def two_camera_rows(
    dataset: str, archive: Archive, cams: Mapping[str, int], name_re: re.Pattern, form: str
) -> Iterator[dict]:
    """Rows for layouts with one folder per camera (``cams``: folder path under the top folder
    -> camid) and the pid as the first group of ``name_re``; split ``all``."""
    seen = dict.fromkeys(cams, 0)
    for m in archive.members():
        folder = PurePosixPath(m.path).parent.as_posix()
        if folder not in cams:
            continue
        hit = name_re.match(PurePosixPath(m.path).name)
        if hit is None:
            raise LayoutError(f"{archive.path}: {m.path!r} is not named {form}")
        seen[folder] += 1
        yield make_row(dataset, m.path, m.data, int(hit.group(1)), cams[folder], "all")
    missing = [c for c, n in seen.items() if n == 0]
    if missing:
        raise LayoutError(f"{archive.path}: no images in {', '.join(missing)}/ under the {dataset} folder")


def _parse(archive: Archive, side: dict, extra: Mapping[str, Path]) -> Iterator[dict]:
    yield from two_camera_rows("viper", archive, CAMS, _NAME, "NNN_<angle>.bmp")


SPEC = register(
    DatasetSpec(
        name="viper",
        files=(
            ArchiveFile(
                "VIPeR.v1.0.zip",
                url="http://users.soe.ucsc.edu/~manduchi/VIPeR.v1.0.zip",
                md5="1c2d9fc1cc800332567a0da25a1ce68c",
            ),
        ),
        top_folder="VIPeR",
        markers=tuple(CAMS),
        parser=_parse,
        how_to_obtain=(
            "VIPeR.v1.0.zip was published at http://users.soe.ucsc.edu/~manduchi/VIPeR.v1.0.zip "
            "(UC Santa Cruz); if that link is down, use a mirror copy with md5 1c2d9fc1cc800332567a0da25a1ce68c."
        ),
        homepage="https://vision.soe.ucsc.edu/node/178",
    )
)
