"""What each DVC stage does, as library functions: `stages/*.py` only parse their key and call these.

One module per stage family (data, segment, train, evaluate, report), each only params -> the
library's arguments -> outs; a stage depends on this file and its own family's module, so an edit
to one family does not invalidate the others' stages.

Paths are the pipeline's layout (relative to the repository root, where DVC runs stages):
data/receipts -> data/images -> data/masks (one folder per dataset, and per mask variant) -> data/splits -> models -> data/features -> metrics.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maskreid.config import ParamsError, get, load_params
from maskreid.datasets.archive import ArchiveError, LayoutError
from maskreid.datasets.download import DatasetUnavailable
from maskreid.io import WriteFailed
from maskreid.store.shards import CorruptImageError

log = logging.getLogger("maskreid")

RECEIPTS = Path("data/receipts")
IMAGES = Path("data/images")
MASKS = Path("data/masks")
SPLITS = Path("data/splits")
MODELS = Path("models")
FEATURES = Path("data/features")
METRICS = Path("metrics")
REPORTS = Path("reports")
MASK_CACHE = Path("data/cache/masks")
PARAMS_CHECKED = Path("data/params_checked.txt")  # the gate out of stage check_params


# failures with a message that says what and where: one line, no traceback
KNOWN_ERRORS = (DatasetUnavailable, ParamsError, FileNotFoundError, ArchiveError, LayoutError, CorruptImageError,
                ValueError, WriteFailed)


def stage_main(fn: Callable[[str, dict], Any], argv: list[str] | None = None) -> None:
    """Entry point of a keyed stage: a known failure prints its message (no traceback) and exits 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    key = argv[0] if argv else ""
    try:
        fn(key, load_params())
    except KNOWN_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def dataset_cfg(name: str, params: dict) -> dict:
    return get(params, f"datasets.{name}")

