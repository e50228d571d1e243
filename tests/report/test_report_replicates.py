"""The seed-replicate section: mean (min–max) over the seeds that ran, per evaluation."""

from maskreid.report.replicates import replicate_table


def _m(r1, mAP):
    return {"rank1": r1, "mAP": mAP}


def test_mean_and_range_over_the_seeds_that_ran():
    cells = {"a": {"sq": _m(76.0, 56.0), "sq_rerank": _m(81.0, 72.0)},
             "a_s1": {"sq": _m(77.0, 55.0)},                       # no re-ranked record: that row is left out
             "b": {"sq": _m(70.0, 50.0)}}
    lines, rows = replicate_table({"a": {"a": "0", "a_s1": "1, start 1"}, "b": {"b": "0", "b_s1": "1"}}, cells)
    assert "| a (0), a_s1 (1, start 1) | single query | 2 | 76.50 (76.00–77.00) | 55.50 (55.00–56.00) |" in lines
    assert not any("+ re-ranking" in line for line in lines)
    assert "| b (0), b_s1 (1) | — | 1 | not run | not run |" in lines   # one seed is no spread
    assert rows == [{"group": "a", "cells": {"a": "0", "a_s1": "1, start 1"}, "eval": "sq", "rank1": [76.0, 77.0],
                     "mAP": [56.0, 55.0]}]
