"""The report's ablation sections: one recipe run with each arch (masks, fusion) or each loss.

Why: the paper's ablation reads across models that share everything but the one choice. Grouping
the cells by their runs' params (``pipeline.report.variant_groups``), not by their names, shows
every such set the profile holds, averaged over the seeds each value ran with.
"""

from __future__ import annotations

from typing import Any

from maskreid.report.replicates import EVALS, spread

# what each arch adds, for the ablation's readers
ARCH_ROLES = {"dgd": "no mask", "mnv2": "no mask", "maskreid_m": "mask stream", "mnv2_m": "mask stream",
              "resnet50_m": "mask stream", "maskreid_mf": "mask stream + fusion",
              "mnv2_mf": "mask stream + fusion", "resnet50_mf": "mask stream + fusion"}


def variant_table(title: str, field: str, groups: dict[str, dict[str, dict[str, str]]],
                  cells: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict]]:
    """``groups``: first cell -> {value of ``field``: {cell: seed label}}. One row per group, value
    and evaluation: rank-1 and mAP as mean (min–max) over that value's cells that ran; a value with
    no cell run reads 'not run'. An evaluation is shown for a group only where every cell that ran has it."""
    lines = ["", f"## {title}", "",
             f"| recipe (first cell) | {field} | cells (seed) | eval | n | rank-1 mean (min–max) | mAP mean (min–max) |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for first, values in groups.items():
        ran = {v: [c for c in cs if cells.get(c)] for v, cs in values.items()}
        for key, label in EVALS:
            got = {v: [cells[c][key] for c in cs if cells[c].get(key)] for v, cs in ran.items() if cs}
            if not got or any(len(got[v]) != len(ran[v]) for v in got):
                continue
            for value, seeds in values.items():
                role = f"{value} ({ARCH_ROLES[value]})" if field == "arch" and value in ARCH_ROLES else value
                names = ", ".join(f"{c} ({s})" for c, s in seeds.items())
                if value not in got:
                    lines.append(f"| {first} | {role} | {names} | {label} | 0 | not run | not run |")
                    continue
                r1, mAP = [g["rank1"] for g in got[value]], [g["mAP"] for g in got[value]]
                lines.append(f"| {first} | {role} | {names} | {label} | {len(r1)} | {spread(r1)} | {spread(mAP)} |")
                rows.append({"group": first, field: value, "cells": {c: seeds[c] for c in ran[value]},
                             "eval": key, "rank1": r1, "mAP": mAP})
    return lines, rows
