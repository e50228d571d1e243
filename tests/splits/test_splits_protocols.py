"""Split protocols: identity counts, PRID rules, seeds, disjointness, CUHK03 classic."""

from __future__ import annotations

import pandas as pd
import pytest

from maskreid.splits import MANIFEST_COLUMNS, build_manifest, eval_pids, zero_is_distractor


def _frame(records: list[tuple[int, int, int]], name: str, split: str = "all") -> pd.DataFrame:
    """records: (pid, camid, k) -> an image frame with the columns the protocols read."""
    return pd.DataFrame(
        {
            "image_id": [f"{name}/c{c}/{p:04d}_{k}.jpg" for p, c, k in records],
            "sha256": [f"{p:04d}{c}{k}".ljust(64, "0") for p, c, k in records],
            "pid": [p for p, _, _ in records],
            "camid": [c for _, c, _ in records],
            "split": split,
        }
    )


def viper_like(n: int = 632) -> pd.DataFrame:
    return _frame([(p, c, 0) for p in range(1, n + 1) for c in (0, 1)], "viper")


def _pids(df: pd.DataFrame, trial: int, role: str) -> set[int]:
    return set(df[(df.trial == trial) & (df.role == role)].pid.tolist())


def test_viper_316_316_and_roles():
    m = build_manifest("viper", viper_like(), "single_shot", seed=0, trials=3)
    assert list(m.columns) == MANIFEST_COLUMNS
    for t in range(3):
        train, q, g = _pids(m, t, "train"), _pids(m, t, "query"), _pids(m, t, "gallery")
        assert len(train) == 316 and len(q) == 316 and q == g
        assert not train & q
        part = m[m.trial == t]
        assert (part[part.role == "query"].camid == 0).all() and (part[part.role == "gallery"].camid == 1).all()
        assert len(part[part.role == "train"]) == 632  # all images of train ids, both cameras
        assert part[part.role == "query"].pid.is_unique
    assert eval_pids(m, 0) == _pids(m, 0, "query")


def test_seeds_reproducible_and_trials_differ():
    f = viper_like()
    a = build_manifest("viper", f, "single_shot", seed=7, trials=2)
    b = build_manifest("viper", f.sample(frac=1.0, random_state=3), "single_shot", seed=7, trials=2)
    pd.testing.assert_frame_equal(a, b)  # shard order does not matter
    assert _pids(a, 0, "query") != _pids(a, 1, "query")
    c = build_manifest("viper", f, "single_shot", seed=8, trials=1)
    assert _pids(c, 0, "query") == _pids(a, 1, "query")  # trial t uses default_rng(seed + t)
    assert _pids(c, 0, "query") != _pids(a, 0, "query")
    assert m_trials(build_manifest("viper", f, "single_shot", seed=0)) == list(range(10))


def m_trials(m: pd.DataFrame) -> list[int]:
    return sorted(m.trial.unique().tolist())


def test_single_shot_picks_one_image_per_camera():
    recs = [(p, c, k) for p in range(1, 972) for c in (0, 1) for k in (0, 1)]  # CUHK01: 2 per camera
    m = build_manifest("cuhk01", _frame(recs, "cuhk01"), "single_shot", seed=0, trials=2)
    for t in range(2):
        assert len(_pids(m, t, "train")) == 485 and len(_pids(m, t, "query")) == 486
        q = m[(m.trial == t) & (m.role == "query")]
        g = m[(m.trial == t) & (m.role == "gallery")]
        assert len(q) == 486 and len(g) == 486 and q.pid.is_unique and g.pid.is_unique
        assert len(m[(m.trial == t) & (m.role == "train")]) == 485 * 4
    picks = m[m.role == "query"].groupby("trial").image_id.apply(lambda s: set(s.str.endswith("_1.jpg")))
    assert all(v == {True, False} for v in picks)  # the rng picks both image 0 and image 1


@pytest.mark.parametrize("name", ["prid2011", "prid"])
def test_prid_rules(name):
    recs = [(p, 0, 0) for p in range(1, 386)] + [(p, 1, 0) for p in range(1, 750)]
    m = build_manifest(name, _frame(recs, "prid"), "single_shot", seed=0, trials=4)
    for t in range(4):
        q, g, train = _pids(m, t, "query"), _pids(m, t, "gallery"), _pids(m, t, "train")
        assert len(q) == 100 and max(q) <= 200
        assert len(train) == 100 and max(train) <= 200 and not train & q
        assert q | set(range(201, 750)) == g  # every cam_b-only person is a gallery distractor
        assert len(m[(m.trial == t) & (m.role == "gallery")]) == 100 + 549
        assert not m[(m.trial == t) & (m.pid > 200) & (m.camid == 0)].size  # cam_a-only: unused


def test_ilids_random_views_unknown_cameras():
    recs = [(p, -1, k) for p in range(1, 120) for k in range(2 + p % 4)]  # camera unknown, 2-5 images
    m = build_manifest("ilids", _frame(recs, "ilids"), "single_shot", seed=0, trials=3)
    for t in range(3):
        assert (len(_pids(m, t, "train")), len(_pids(m, t, "query"))) == (60, 59)
        q = m[(m.trial == t) & (m.role == "query")]
        g = m[(m.trial == t) & (m.role == "gallery")]
        assert q.pid.is_unique and g.pid.is_unique and set(q.pid) == set(g.pid)
        assert not set(q.image_id) & set(g.image_id)  # probe and gallery are different images
        assert (q.camid == 0).all() and (g.camid == 1).all()  # the view, so evaluation keeps the match
        assert (m[(m.trial == t) & (m.role == "train")].camid == -1).all()


def test_3dpes_random_views_prefer_another_camera():
    # 192 ids; pid p seen by cameras p%8 (3 images) and (p+3)%8 (1 image); ids 190-192 one image only
    recs = [(p, p % 8, k) for p in range(1, 190) for k in range(3)] + [(p, (p + 3) % 8, 9) for p in range(1, 190)]
    recs += [(p, 0, 0) for p in range(190, 193)]
    m = build_manifest("threedpes", _frame(recs, "threedpes"), "single_shot", seed=1, trials=2)
    for t in range(2):
        assert (len(_pids(m, t, "train")), len(_pids(m, t, "query"))) == (92, 100)
        assert {190, 191, 192} <= _pids(m, t, "train")  # one image: can only train
        q = m[(m.trial == t) & (m.role == "query")].set_index("pid").image_id
        g = m[(m.trial == t) & (m.role == "gallery")].set_index("pid").image_id
        cam_of = {f"threedpes/c{c}/{p:04d}_{k}.jpg": c for p, c, k in recs}
        assert all(cam_of[q[p]] != cam_of[g[p]] for p in q.index)


def test_3dpes_alias_and_unknown_name_default_half():
    assert build_manifest("3dpes", _frame([(p, -1, k) for p in range(1, 201) for k in (0, 1)], "x"),
                          "single_shot", 0, 1).query("role == 'query'").pid.nunique() == 100
    syn = build_manifest("synthetic_small", _frame([(p, c, 0) for p in range(1, 11) for c in (0, 1)], "s"),
                         "single_shot", 0, 1)
    assert (len(_pids(syn, 0, "train")), len(_pids(syn, 0, "query"))) == (5, 5)


def test_viper_zero_based_pid_is_a_person():
    m = build_manifest("viper", _frame([(p, c, 0) for p in range(0, 632) for c in (0, 1)], "viper"), "single_shot", 0, 4)
    assert not zero_is_distractor(m)
    assert any(0 in eval_pids(m, t) for t in range(4)) and any(0 in _pids(m, t, "train") for t in range(4))


def test_single_shot_too_few_ids_errors():
    with pytest.raises(ValueError, match="viper.*316"):
        build_manifest("viper", viper_like(100), "single_shot", 0, 1)


def test_market_roles_from_split():
    recs = _frame([(1, 0, 0), (1, 1, 0)], "m", "train")
    q = _frame([(2, 0, 9)], "m", "query")
    g = _frame([(2, 1, 0), (0, 2, 0), (-1, 3, 0)], "m", "gallery")
    mq = _frame([(2, 0, 5)], "m", "multiquery")
    m = build_manifest("market1501", pd.concat([g, mq, q, recs]), "market")
    assert (m.trial == 0).all()
    assert m.groupby("role").size().to_dict() == {"gallery": 3, "multiquery": 1, "query": 1, "train": 2}
    assert zero_is_distractor(m) and eval_pids(m) == {2}
    assert list(m.role) == ["train", "train", "query", "gallery", "gallery", "gallery", "multiquery"]
    with pytest.raises(ValueError, match="split 'all'"):
        build_manifest("viper", viper_like(4), "market")


def test_cuhk03_classic():
    f = _frame([(p, c, k) for p in range(1, 41) for c in (0, 1) for k in range(2)], "cuhk03")
    lists = [list(range(1 + 5 * i, 6 + 5 * i)) for i in range(8)]
    m = build_manifest("cuhk03", f, "cuhk03_classic", trials=3, side_files={"classic_splits": lists})
    for t in range(3):
        assert _pids(m, t, "test") == set(lists[t])
        assert _pids(m, t, "train") == set(range(1, 41)) - set(lists[t])
        assert len(m[(m.trial == t) & (m.role == "test")]) == 5 * 4
    with pytest.raises(KeyError, match="classic_splits"):
        build_manifest("cuhk03", f, "cuhk03_classic", trials=1, side_files={})
    with pytest.raises(ValueError, match=r"classic_splits\[0\].*999"):
        build_manifest("cuhk03", f, "cuhk03_classic", trials=1, side_files={"classic_splits": [[1, 999]]})


def test_bad_input_names_the_problem():
    with pytest.raises(KeyError, match="'x'.*camid"):
        build_manifest("x", viper_like(4).drop(columns="camid"), "single_shot")
    with pytest.raises(ValueError, match="unknown protocol"):
        build_manifest("x", viper_like(4), "nope")
    dup = pd.concat([viper_like(4), viper_like(4).iloc[:1]])
    with pytest.raises(ValueError, match="duplicate image_id"):
        build_manifest("x", dup, "single_shot")
