"""Table 4 (the paper's alpha x lambda study) from DVC experiments.

The grid runs as experiments (`dvc exp run --queue -S 'loss.alpha=0.1,0.15' -S 'loss.lambda=0,1,2,5,10'`),
so no single pipeline run sees all of it: this reads `dvc exp show --json` and tabulates one cell's
rank-1 / mAP per (alpha, lambda).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _records(node: Any) -> Iterator[dict]:
    """Every experiment/commit record (a dict with data.params) anywhere in the JSON tree."""
    if isinstance(node, list):
        for x in node:
            yield from _records(x)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            yield {"name": node.get("name") or node.get("rev"), **data}
        for key in ("experiments", "revs"):
            if node.get(key):
                yield from _records(node[key])


def _cell_metrics(metrics: dict, eval_key: str) -> Iterator[tuple[str, dict]]:
    """(cell, {rank1, mAP}) from an experiment's metrics: ``metrics/headline.json`` (one file,
    single query per cell) or, in experiments older than it, one ``metrics/cells/<cell>.json``
    per cell with every evaluation."""
    for path, m in (metrics or {}).items():
        data = (m or {}).get("data") or {}
        if path.endswith("headline.json") and eval_key == "sq":
            yield from data.items()
        elif "/cells/" in path and path.endswith(".json") and data.get(eval_key):
            yield path.rsplit("/", 1)[1][:-5], data[eval_key]


def sweep_rows(exp_json: Any, cell: str | None = None, eval_key: str = "sq") -> list[dict]:
    rows = []
    for rec in _records(exp_json):
        params = rec.get("params", {}).get("params.yaml", {}).get("data", {})
        loss = params.get("loss") or {}
        for name, res in _cell_metrics(rec.get("metrics"), eval_key):
            if cell is not None and name != cell:
                continue
            if not res or not name.startswith(("t2_", "t3_")) or "_rank" not in name:
                continue
            rows.append({"exp": rec["name"], "cell": name, "alpha": loss.get("alpha"), "lambda": loss.get("lambda"),
                         "rank1": res.get("rank1"), "mAP": res.get("mAP")})
    return rows


def table4_from_experiments(exp_json: Any, cell: str | None = None) -> str:
    rows = sweep_rows(exp_json, cell)
    if not rows:
        return "No experiment with a ranking-loss cell found: run the Table 4 queue first (see README).\n"
    lines = ["# Table 4: ranking-loss alpha x lambda", "", "| cell | alpha | lambda | rank-1 | mAP | experiment |",
             "|---|---|---|---|---|---|"]
    seen = set()
    for r in sorted(rows, key=lambda r: (r["cell"], r["alpha"] or 0, r["lambda"] or 0, str(r["exp"]))):
        key = (r["cell"], r["alpha"], r["lambda"])
        if key in seen:  # the workspace repeats an experiment's numbers
            continue
        seen.add(key)
        lines.append(f"| {r['cell']} | {r['alpha']} | {r['lambda']} | {r['rank1']:.2f} | {r['mAP']:.2f} | {r['exp']} |")
    return "\n".join(lines) + "\n"
