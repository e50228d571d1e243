"""DukeMTMC-reID (Zheng et al., ICCV 2017): Market's bounding-box layout without gt_bbox/gt_query.

Layout under ``DukeMTMC-reID/``: ``bounding_box_train`` -> train, ``bounding_box_test`` ->
gallery, ``query`` -> query; names ``<pid>_c<cam>_f<frame>.jpg``, camid = cam - 1. The DukeMTMC
project was withdrawn in 2019, so there is no download URL; the licence is academic use only.
"""

from __future__ import annotations

from maskreid.datasets.base import ArchiveFile, DatasetSpec, register
from maskreid.datasets.market1501 import bbox_parser

FOLDERS = {"bounding_box_train": "train", "bounding_box_test": "gallery", "query": "query"}

SPEC = register(
    DatasetSpec(
        name="dukemtmc_reid",
        files=(ArchiveFile("DukeMTMC-reID.zip", url=None, md5="2f93496f9b516d1ee5ef51c1d5e7d601"),),
        top_folder="DukeMTMC-reID",
        markers=tuple(FOLDERS),
        parser=bbox_parser("dukemtmc_reid", FOLDERS, with_gt_query=False),
        how_to_obtain=(
            "DukeMTMC-reID was withdrawn by its authors in 2019 and has no official download: "
            "use an existing copy of DukeMTMC-reID.zip (md5 2f93496f9b516d1ee5ef51c1d5e7d601) "
            "held under its academic-use licence."
        ),
        junk_pids=True,
        homepage="https://github.com/layumi/DukeMTMC-reID_evaluation",
    )
)
