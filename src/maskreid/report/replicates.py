"""The report's seed-replicate section: the same run trained with other seeds, side by side.

Why: the ablation rows (masks, fusion, mask source) differ by a point or less; without the spread
of one recipe over seeds nobody can tell such a gap from run-to-run noise.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

EVALS = (("sq", "single query"), ("sq_rerank", "+ re-ranking"), ("mq_mean", "multi-query (mean)"))


def spread(values: list[float]) -> str:
    """``mean (min–max)``, or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{mean(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def replicate_table(groups: dict[str, dict[str, str]], cells: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict]]:
    """``groups``: first cell -> {cell: its seed(s)} for cells whose runs differ only in seeds. One row
    per group and evaluation that every seed has: rank-1 and mAP as mean (min–max) over the seeds."""
    lines = ["", "## Seed replicates: one recipe trained with several seeds (run-to-run noise)", "",
             "| replicates (seed) | eval | n | rank-1 mean (min–max) | mAP mean (min–max) |",
             "|---|---|---|---|---|"]
    rows = []
    for first, seeds in groups.items():
        ran = {c: s for c, s in seeds.items() if cells.get(c)}
        names = ", ".join(f"{c} ({s})" for c, s in seeds.items())
        if len(ran) < 2:
            lines.append(f"| {names} | — | {len(ran)} | not run | not run |")
            continue
        for key, label in EVALS:
            got = [cells[c][key] for c in ran if cells[c].get(key)]
            if len(got) != len(ran):
                continue
            r1, mAP = [g["rank1"] for g in got], [g["mAP"] for g in got]
            lines.append(f"| {names} | {label} | {len(got)} | {spread(r1)} | {spread(mAP)} |")
            rows.append({"group": first, "cells": ran, "eval": key, "rank1": r1, "mAP": mAP})
    return lines, rows
