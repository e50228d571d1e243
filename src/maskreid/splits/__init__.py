"""Protocols and split manifests (see :mod:`maskreid.splits.protocols`)."""

from maskreid.splits.io import MANIFEST_SCHEMA, manifest_path, meta_path, read_manifest, read_meta, write_manifest
from maskreid.splits.merged import MERGED_COLUMNS, merged_train
from maskreid.splits.protocols import (
    DEFAULT_RULE,
    MANIFEST_COLUMNS,
    PROTOCOLS,
    ROLES,
    SINGLE_SHOT_RULES,
    SingleShotRule,
    build_manifest,
    eval_pids,
    zero_is_distractor,
)

__all__ = [
    "DEFAULT_RULE",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "MERGED_COLUMNS",
    "PROTOCOLS",
    "ROLES",
    "SINGLE_SHOT_RULES",
    "SingleShotRule",
    "build_manifest",
    "eval_pids",
    "merged_train",
    "manifest_path",
    "meta_path",
    "read_manifest",
    "read_meta",
    "write_manifest",
    "zero_is_distractor",
]

from maskreid.splits.subset import subset_manifest  # noqa: E402,F401
