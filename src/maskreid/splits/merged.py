"""The merged pre-training set: train rows of several datasets under one label space.

Identities are namespaced ``<dataset>_<pid>`` (``viper_12``) because pids are only unique within
a dataset, then relabelled 0..C-1 in sorted (dataset, pid) order so the labels do not depend on
the order the manifests were passed in. Junk (-1) and distractor images carry no identity and are left
out; pid 0 is a distractor only where the manifest says so (in the gallery, never a query:
Market/Duke) — VIPeR's person 000 is a person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from maskreid.splits.protocols import zero_is_distractor

MERGED_COLUMNS = ["dataset", "image_id", "sha256", "pid", "camid", "global_pid", "label"]


def merged_train(
    manifests: Mapping[str, pd.DataFrame],
    trial: int = 0,
    exclude_pids: Mapping[str, Iterable[int]] | None = None,
    test_identities: Iterable[str] = (),
) -> pd.DataFrame:
    """Train rows of every manifest (``MERGED_COLUMNS``), labels contiguous 0..C-1.

    A manifest with trials uses trial ``trial``; one with a single fixed split (Market, Duke:
    trial 0 only) uses that split. ``exclude_pids`` maps a dataset name to identities never to
    include (e.g. a target's test identities of another trial). ``test_identities`` names
    datasets whose test rows (query, gallery, multi-query; identities only, no junk or
    distractor) join their train rows: a set used only to pre-train a model for another target
    is labelled people, test split or not (Duke's 702 training identities become 1,812).
    """
    exclude_pids = {k: {int(p) for p in v} for k, v in (exclude_pids or {}).items()}
    unknown = sorted(set(exclude_pids) - set(manifests))
    if unknown:
        raise KeyError(f"exclude_pids names datasets not being merged: {unknown}")
    test_identities = set(test_identities)
    unknown = sorted(test_identities - set(manifests))
    if unknown:
        raise KeyError(f"test_identities names datasets not being merged: {unknown}")
    parts = []
    for name in sorted(manifests):
        m = manifests[name]
        trials = set(m["trial"].unique().tolist())
        if trial in trials:
            t = trial
        elif trials == {0}:
            t = 0
        else:
            raise ValueError(f"manifest {name!r} has trials {sorted(trials)}, not trial {trial}")
        min_pid = 1 if zero_is_distractor(m) else 0
        keep = (m["trial"] == t) & (m["pid"] >= min_pid)
        if name not in test_identities:
            keep &= m["role"] == "train"
        rows = m[keep]
        rows = rows[~rows["pid"].isin(exclude_pids.get(name, set()))]
        rows = rows[["image_id", "sha256", "pid", "camid"]].copy()
        rows.insert(0, "dataset", name)
        parts.append(rows)
    if not parts:
        raise ValueError("merged_train: no manifests given")
    df = pd.concat(parts, ignore_index=True).sort_values(["dataset", "pid", "image_id"], kind="stable")
    df["global_pid"] = df["dataset"] + "_" + df["pid"].astype(str)
    df["label"] = df.groupby(["dataset", "pid"], sort=True).ngroup().astype("int64")
    return df[MERGED_COLUMNS].reset_index(drop=True)
