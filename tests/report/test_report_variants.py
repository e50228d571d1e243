"""The ablation sections: one recipe with each arch or loss, mean (min–max) over each value's seeds."""

from maskreid.report.variants import variant_table


def _m(r1, mAP):
    return {"rank1": r1, "mAP": mAP}


def test_each_value_is_averaged_over_its_own_cells_that_ran():
    cells = {"a": {"sq": _m(76.0, 56.0), "sq_rerank": _m(81.0, 72.0)},
             "a_s1": {"sq": _m(77.0, 55.0), "sq_rerank": _m(80.0, 70.0)},
             "b": {"sq": _m(70.0, 50.0)}}                            # no re-ranked record
    groups = {"a": {"mnv2": {"a": "0", "a_s1": "1"}, "mnv2_mf": {"b": "0"}, "mnv2_m": {"c": "0"}}}
    lines, rows = variant_table("Masks", "arch", groups, cells)
    assert "| a | mnv2 (no mask) | a (0), a_s1 (1) | single query | 2 | 76.50 (76.00–77.00) | 55.50 (55.00–56.00) |" in lines
    assert "| a | mnv2_mf (mask stream + fusion) | b (0) | single query | 1 | 70.00 | 50.00 |" in lines
    assert "| a | mnv2_m (mask stream) | c (0) | single query | 0 | not run | not run |" in lines
    assert not any("+ re-ranking" in line for line in lines)   # b lacks it: no one-sided comparison
    assert [(r["arch"], r["eval"], r["rank1"]) for r in rows] == [("mnv2", "sq", [76.0, 77.0]), ("mnv2_mf", "sq", [70.0])]


def test_a_loss_value_is_shown_as_it_is():
    cells = {"r": {"sq": _m(75.0, 55.0)}, "t": {"sq": _m(72.0, 50.0)}}
    lines, _ = variant_table("Losses", "loss", {"r": {"rank": {"r": "0"}, "triplet": {"t": "0"}}}, cells)
    assert lines[1] == "## Losses"
    assert "| r | triplet | t (0) | single query | 1 | 72.00 | 50.00 |" in lines
