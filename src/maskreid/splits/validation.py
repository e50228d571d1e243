"""A validation split carved from a dataset's *training* identities.

Why: every setting (loss, sampler, schedule, mask source) must be chosen without looking at the
test identities. The held-out identities are split Market-style: per (identity, camera) one
query image, the rest of that identity's training images form the gallery, so the Market junk
rule (same identity, same camera) applies unchanged and every query has a cross-camera match
where the identity has one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from maskreid.splits.protocols import zero_is_distractor


def validation_split(manifest: pd.DataFrame, n_ids: int, seed: int = 0,
                     trial: int = 0) -> tuple[set[int], pd.DataFrame]:
    """``(val_pids, val_frame)``: ``n_ids`` training identities seen by >= 2 cameras, drawn with
    ``seed``, and their images with ``role`` ``query`` (one per identity and camera, the first by
    image_id) or ``gallery``. Train on the other training identities (``merged_train(...,
    exclude_pids={name: val_pids})``)."""
    rows = manifest[(manifest["trial"] == trial) & (manifest["role"] == "train")]
    rows = rows[rows["pid"] >= (1 if zero_is_distractor(manifest) else 0)]
    cams = rows.groupby("pid")["camid"].nunique()
    eligible = np.sort(cams[cams >= 2].index.to_numpy())
    if not 1 <= n_ids < len(eligible):
        raise ValueError(f"validation_split: n_ids must be in [1, {len(eligible) - 1}] "
                         f"(training identities seen by >= 2 cameras: {len(eligible)}), got {n_ids}")
    pids = {int(p) for p in np.random.default_rng(seed).choice(eligible, n_ids, replace=False)}
    val = rows[rows["pid"].isin(pids)].sort_values(["pid", "camid", "image_id"], kind="stable").copy()
    first = ~val.duplicated(["pid", "camid"])
    val["role"] = np.where(first, "query", "gallery")
    return pids, val.reset_index(drop=True)
