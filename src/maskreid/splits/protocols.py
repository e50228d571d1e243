"""Evaluation protocols as manifests: which image plays which role in which trial.

A manifest is one row per (trial, role, image) with ``MANIFEST_COLUMNS``. Splits are decided
here, once, and written to a tracked file, so training and evaluation can never disagree about
which identities are test identities, and the random small-set splits are reproducible.

Protocols:

* ``market`` — Market-1501, DukeMTMC-reID, the synthetic ``market`` layout and CUHK03's new
  protocol (whose shard rows already carry train/query/gallery): the role is the shard's
  ``split`` (``train``, ``query``, ``gallery``, ``multiquery``), one trial (0).
* ``single_shot`` — VIPeR, CUHK01, iLIDS, PRID, 3DPeS, synthetic ``single_shot``: the DGD split
  scheme (never published, so ours is seeded): per trial ``t`` the test identities are drawn with
  ``numpy.random.default_rng(seed + t)``; camera A (camid 0) images of test identities are
  queries, camera B (camid 1) the gallery, one image per identity per camera (picked by the same
  rng when there are several); ``train`` = every image of the other identities. Sets without
  a camera A/B (iLIDS: camera unknown; 3DPeS: 8 cameras) draw a probe and a gallery image per
  test identity instead (``random_views``). Per-dataset rules are in ``SINGLE_SHOT_RULES``; pid 0
  is a person in these sets (VIPeR counts from 000).
* ``cuhk03_classic`` — the 20 published train/test splits (side file ``classic_splits``: 20 lists
  of test pids). Trial ``t`` marks the images of list ``t`` role ``test`` and the rest ``train``.
  Single-gallery-shot query/gallery sets are drawn at evaluation time (one random gallery image
  per identity, repeated), not here, because the protocol redraws them 10 times per split.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MANIFEST_COLUMNS = ["trial", "role", "image_id", "sha256", "pid", "camid"]
ROLES = ("train", "query", "gallery", "multiquery", "test")
PROTOCOLS = ("market", "single_shot", "cuhk03_classic")
FRAME_COLUMNS = ["image_id", "sha256", "pid", "camid", "split"]


@dataclass(frozen=True)
class SingleShotRule:
    """How a small set is split.

    n_test: test identities per trial (None: half, rounded down, of the eligible identities,
        i.e. those seen by both camera 0 and camera 1).
    max_shared_pid: only pids up to this are eligible; images of higher pids count as seen by
        one camera whatever their number (PRID names persons 201+ independently per camera, so
        cam_a's 201 and cam_b's 201 are different people).
    cam_b_only_gallery: identities seen only by camera B are gallery distractors in every trial
        and never train (PRID: persons 201..749 of cam_b).
    drop_cam_a_only: identities seen only by camera A are not used at all (PRID: persons 201..385
        of cam_a have no match and the protocol leaves them out). Otherwise one-camera identities
        can only train.
    random_views: no camera A/B (iLIDS: camera unknown, camid -1; 3DPeS: 8 cameras). Every
        identity with >= 2 images is eligible; per test identity the rng picks a probe image and
        a gallery image (from another camera than the probe's when the identity has one). In the
        manifest these rows carry the *view* as camid (probe 0, gallery 1), so evaluation treats
        them like VIPeR's cam A/B; train rows keep the shard's camid.
    train_only: a set used for pre-training alone (Shinpuhkan: the paper trains on all of it, and
        DGD's split holds none of it out): every image is ``train`` in every trial.
    """

    n_test: int | None = None
    max_shared_pid: int | None = None
    cam_b_only_gallery: bool = False
    drop_cam_a_only: bool = False
    random_views: bool = False
    train_only: bool = False


# The DGD scheme per dataset (PROTOCOL.md). Keys are dataset names as in the image shards.
SINGLE_SHOT_RULES: dict[str, SingleShotRule] = {
    "viper": SingleShotRule(n_test=316),  # 632 ids: 316 train / 316 test
    "cuhk01": SingleShotRule(n_test=486),  # 971 ids: 485 train / 486 test
    "ilids": SingleShotRule(n_test=59, random_views=True),  # 119 ids: 60 train / 59 test
    "prid2011": SingleShotRule(100, 200, cam_b_only_gallery=True, drop_cam_a_only=True),  # 200 shared
    "threedpes": SingleShotRule(n_test=100, random_views=True),  # 192 ids: 92 train / 100 test
    "shinpuhkan": SingleShotRule(train_only=True),  # 24 ids, pre-training only: all of it trains
}
SINGLE_SHOT_RULES["prid"] = SINGLE_SHOT_RULES["prid2011"]
SINGLE_SHOT_RULES["3dpes"] = SINGLE_SHOT_RULES["threedpes"]
DEFAULT_RULE = SingleShotRule()


def _check_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise KeyError(f"dataset {name!r}: image frame lacks columns {missing} (need {FRAME_COLUMNS})")
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"dataset {name!r}: duplicate image_id {frame.loc[dup, 'image_id'].iloc[0]!r}")
    # sort so the manifest depends on the images, not on the order of the shards
    return frame[FRAME_COLUMNS].sort_values("image_id", kind="stable").reset_index(drop=True)


def _rows(part: pd.DataFrame, trial: int, role: str) -> pd.DataFrame:
    out = part[["image_id", "sha256", "pid", "camid"]].copy()
    out.insert(0, "role", role)
    out.insert(0, "trial", trial)
    return out


def _finish(parts: list[pd.DataFrame]) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=MANIFEST_COLUMNS)
    df = df.astype({"trial": "int64", "pid": "int64", "camid": "int64", "role": str, "image_id": str, "sha256": str})
    order = {r: i for i, r in enumerate(ROLES)}
    df = df.sort_values(["trial", "role", "image_id"], key=lambda s: s.map(order) if s.name == "role" else s)
    return df[MANIFEST_COLUMNS].reset_index(drop=True)


def _market(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    bad = ~frame["split"].isin(["train", "query", "gallery", "multiquery"])
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise ValueError(
            f"dataset {name!r}: protocol 'market' needs split train/query/gallery/multiquery, "
            f"image {row['image_id']!r} has split {row['split']!r} (use protocol 'single_shot')"
        )
    return _finish([_rows(frame[frame["split"] == s], 0, s) for s in ("train", "query", "gallery", "multiquery")])


def _pick_one(part: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """One image per identity, chosen at random (vectorised: shuffle, keep the first per pid)."""
    shuffled = part.iloc[rng.permutation(len(part))]
    return shuffled.drop_duplicates("pid", keep="first")


def _single_shot(name: str, frame: pd.DataFrame, seed: int, trials: int) -> pd.DataFrame:
    rule = SINGLE_SHOT_RULES.get(name, DEFAULT_RULE)
    if rule.train_only:
        return _finish([_rows(frame, t, "train") for t in range(trials)])
    if rule.random_views:
        return _single_shot_random_views(name, frame, rule, seed, trials)
    has = frame.assign(a=frame["camid"] == 0, b=frame["camid"] == 1).groupby("pid")[["a", "b"]].any()
    eligible = has["a"] & has["b"]
    if rule.max_shared_pid is not None:
        eligible &= has.index <= rule.max_shared_pid
    both = np.sort(has.index[eligible].to_numpy(np.int64))
    n_test = _n_test(name, rule, len(both), "seen by both camera 0 and camera 1")
    one_cam = ~frame["pid"].isin(both)
    extra_gallery = frame[one_cam & (frame["camid"] == 1)] if rule.cam_b_only_gallery else frame.iloc[:0]
    never_train = one_cam & (
        ((frame["camid"] == 1) & rule.cam_b_only_gallery) | ((frame["camid"] == 0) & rule.drop_cam_a_only)
    )
    parts = []
    for t in range(trials):
        rng = np.random.default_rng(seed + t)
        test = set(rng.choice(both, n_test, replace=False).tolist())
        is_test = frame["pid"].isin(test)
        train = frame[~is_test & ~never_train]
        query = _pick_one(frame[is_test & (frame["camid"] == 0)], rng)
        gallery = _pick_one(pd.concat([frame[is_test & (frame["camid"] == 1)], extra_gallery]), rng)
        parts += [_rows(train, t, "train"), _rows(query, t, "query"), _rows(gallery, t, "gallery")]
    return _finish(parts)


def _n_test(name: str, rule: SingleShotRule, n_eligible: int, what: str) -> int:
    n_test = n_eligible // 2 if rule.n_test is None else rule.n_test
    if not 0 < n_test <= n_eligible:
        raise ValueError(
            f"dataset {name!r}: protocol 'single_shot' wants {n_test} test identities but only "
            f"{n_eligible} identities are {what}"
        )
    return n_test


def _single_shot_random_views(name: str, frame: pd.DataFrame, rule: SingleShotRule, seed: int, trials: int) -> pd.DataFrame:
    counts = frame.groupby("pid").size()
    eligible = np.sort(counts.index[counts >= 2].to_numpy(np.int64))
    n_test = _n_test(name, rule, len(eligible), "with 2 or more images")
    parts = []
    for t in range(trials):
        rng = np.random.default_rng(seed + t)
        test = set(rng.choice(eligible, n_test, replace=False).tolist())
        is_test = frame["pid"].isin(test)
        query = _pick_one(frame[is_test], rng)
        rest = frame[is_test & ~frame["image_id"].isin(query["image_id"])]
        q_cam = rest["pid"].map(query.set_index("pid")["camid"])
        # another camera than the probe's first (when cameras are known), then at random
        same = ((rest["camid"] == q_cam) | (rest["camid"] < 0)).to_numpy()
        order = np.lexsort((rng.random(len(rest)), same))
        gallery = rest.iloc[order].drop_duplicates("pid", keep="first")
        parts += [
            _rows(frame[~is_test], t, "train"),
            _rows(query.assign(camid=0), t, "query"),
            _rows(gallery.assign(camid=1), t, "gallery"),
        ]
    return _finish(parts)


def _cuhk03_classic(name: str, frame: pd.DataFrame, trials: int, side_files: Mapping[str, Any]) -> pd.DataFrame:
    if "classic_splits" not in side_files:
        raise KeyError(f"dataset {name!r}: protocol 'cuhk03_classic' needs side file 'classic_splits' (lists of test pids)")
    splits = side_files["classic_splits"]
    if trials > len(splits):
        raise ValueError(f"dataset {name!r}: {trials} trials asked, side file 'classic_splits' has {len(splits)} splits")
    known = set(frame["pid"].tolist())
    parts = []
    for t in range(trials):
        test = {int(p) for p in splits[t]}
        unknown = sorted(test - known)
        if unknown:
            raise ValueError(f"dataset {name!r}: classic_splits[{t}] names pids not in the images: {unknown[:5]}")
        is_test = frame["pid"].isin(test)
        parts += [_rows(frame[~is_test], t, "train"), _rows(frame[is_test], t, "test")]
    return _finish(parts)


def build_manifest(
    name: str,
    frame: pd.DataFrame,
    protocol: str,
    seed: int = 0,
    trials: int | None = None,
    side_files: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Manifest (``MANIFEST_COLUMNS``) of a dataset's image frame under a protocol.

    ``frame`` needs image_id, sha256, pid, camid, split (``read_frame(dir, columns=...)``).
    ``trials`` defaults to 10 for ``single_shot`` and 20 for ``cuhk03_classic``; ``market`` has 1.
    """
    frame = _check_frame(name, frame)
    if protocol == "market":
        if trials not in (None, 1):
            raise ValueError(f"dataset {name!r}: protocol 'market' has one fixed split, got trials={trials}")
        return _market(name, frame)
    if protocol == "single_shot":
        return _single_shot(name, frame, seed, 10 if trials is None else trials)
    if protocol == "cuhk03_classic":
        return _cuhk03_classic(name, frame, 20 if trials is None else trials, side_files or {})
    raise ValueError(f"dataset {name!r}: unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")


def eval_pids(manifest: pd.DataFrame, trial: int = 0) -> set[int]:
    """Identities a trial evaluates on (query, gallery or test roles; junk and distractors left out)."""
    m = manifest[(manifest["trial"] == trial) & manifest["role"].isin(["query", "gallery", "multiquery", "test"])]
    pids = {int(p) for p in m["pid"].unique() if p >= 0}
    return pids - {0} if zero_is_distractor(manifest) else pids


def zero_is_distractor(manifest: pd.DataFrame) -> bool:
    """Whether pid 0 marks distractors (Market: in the gallery, never a query) rather than a real
    person (VIPeR numbers its people from 000). It must be seen in a gallery: VIPeR's person 000,
    when it trains in every trial (``trials=1``, seed 1), is in no query either, and is a person."""
    zero = manifest.loc[manifest["pid"] == 0, "role"]
    return bool(zero.eq("gallery").any()) and not zero.isin(["query", "multiquery"]).any()
