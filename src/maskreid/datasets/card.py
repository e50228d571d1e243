"""A dataset card: the counts a reader checks against the paper before trusting any number.

Written by the ingest stage to ``metrics/datasets/<name>.json`` (small, committed, diffable).
"""

from __future__ import annotations

import pandas as pd

SPLIT_ORDER = ("train", "query", "gallery", "multiquery", "all")


def _sizes(part: pd.DataFrame) -> dict:
    wh = part["width"].astype(str) + "x" + part["height"].astype(str)
    return {
        "min_wh": [int(part["width"].min()), int(part["height"].min())],
        "max_wh": [int(part["width"].max()), int(part["height"].max())],
        "most_common_wh": wh.value_counts().idxmax(),
    }


def dataset_card(frame: pd.DataFrame, junk_pids: bool = True) -> dict:
    """Per split: images, distinct pids (``identities``; junk -1 and distractor 0 count as a pid
    each when present, as in how Market's gallery is usually quoted: 752), cameras, junk (pid -1)
    and distractor (pid 0) images, and image sizes (min/max/most common WxH). ``junk_pids``
    False (sets where 0 is an ordinary id, e.g. VIPeR) reports junk/distractors as None."""
    need = {"split", "pid", "camid", "width", "height"}
    missing = need - set(frame.columns)
    if missing:
        raise KeyError(f"dataset_card needs columns {sorted(need)}; missing {sorted(missing)}")
    splits = [s for s in SPLIT_ORDER if s in set(frame["split"])] + sorted(set(frame["split"]) - set(SPLIT_ORDER))
    card: dict = {
        "datasets": sorted(frame["dataset"].unique().tolist()) if "dataset" in frame else [],
        "images": int(len(frame)),
        "identities": int(frame["pid"].nunique()),
        "splits": {},
    }
    for s in splits:
        part = frame[frame["split"] == s]
        card["splits"][s] = {
            "images": int(len(part)),
            "identities": int(part["pid"].nunique()),
            "cameras": int(part["camid"].nunique()),
            "junk": int((part["pid"] == -1).sum()) if junk_pids else None,
            "distractors": int((part["pid"] == 0).sum()) if junk_pids else None,
            **_sizes(part),
        }
    if len(frame):
        card.update(_sizes(frame))
    return card
