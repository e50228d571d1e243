import pandas as pd

from maskreid.splits import subset_manifest


def _manifest():
    rows = []
    for pid in range(1, 21):  # train ids
        rows += [dict(trial=0, role="train", image_id=f"tr{pid}_{k}", pid=pid, camid=k % 2) for k in range(3)]
    for pid in range(21, 41):  # test ids
        rows.append(dict(trial=0, role="query", image_id=f"q{pid}", pid=pid, camid=0))
        rows += [dict(trial=0, role="gallery", image_id=f"g{pid}_{k}", pid=pid, camid=1) for k in range(2)]
    rows += [dict(trial=0, role="gallery", image_id=f"d{i}", pid=0 if i % 2 else -1, camid=1) for i in range(40)]
    return pd.DataFrame(rows)


def test_subset_keeps_whole_identities_and_proportional_distractors():
    m = _manifest()
    s = subset_manifest(m, train_ids=5, test_ids=10, seed=3)
    assert s[s.role == "train"].pid.nunique() == 5
    assert len(s[s.role == "train"]) == 15  # all images of the chosen identities
    test = s[s.role != "train"]
    assert test[test.pid > 0].pid.nunique() == 10
    assert set(test[test.role == "query"].pid) == set(test[(test.role == "gallery") & (test.pid > 0)].pid)
    assert len(test[test.pid <= 0]) == 20  # half the 40 distractor/junk boxes for half the test ids
    assert subset_manifest(m, 5, 10, seed=3).equals(s)
    assert not subset_manifest(m, 5, 10, seed=4).equals(s)
