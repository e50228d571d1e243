"""A reduced-size manifest (a few hundred identities) for CPU runs on the real sets.

Subsampling happens on the manifest, after ingest and segmentation, so dataset cards and mask
statistics still describe the whole dataset while training and evaluation run on a documented,
seeded subset. Distractors (pid 0) and junk (pid -1) are kept in the same proportion as the
test identities, so the gallery keeps its realistic share of wrong and ignored boxes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def subset_manifest(manifest: pd.DataFrame, train_ids: int | None = None, test_ids: int | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    keep = []
    for trial, df in manifest.groupby("trial", sort=True):
        train = df[df.role == "train"]
        test = df[df.role != "train"]
        real_train = np.unique(train.pid[train.pid > 0])
        if train_ids is not None and train_ids < len(real_train):
            chosen = set(rng.choice(real_train, train_ids, replace=False).tolist())
            train = train[train.pid.isin(chosen)]
        real_test = np.unique(test.pid[test.pid > 0])
        if test_ids is not None and test_ids < len(real_test):
            chosen = set(rng.choice(real_test, test_ids, replace=False).tolist())
            frac = test_ids / len(real_test)
            special = test[test.pid <= 0]
            special_ids = special.image_id.drop_duplicates()
            kept_special = set(special_ids.sample(frac=frac, random_state=int(seed)).tolist())
            test = test[test.pid.isin(chosen) | test.image_id.isin(kept_special)]
        keep += [train, test]
    out = pd.concat(keep, ignore_index=True)
    return out
