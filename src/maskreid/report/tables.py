"""The paper's tables with our reproduced cells beside the published ones.

Each evaluate@<cell> stage writes reports/cells/<cell>.json (the full record; its headline
rank-1 / mAP is the tracked metric metrics/cells/<cell>.json); this module only reads them. A cell
whose stage did not run says "not run" — a published figure is never copied into our column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Published figures (Qi et al., MaskReID), in percent. Only the cells we have the source for.
PAPER: dict[str, dict[str, float]] = {
    "market1501/sq": {"rank1": 90.02, "mAP": 75.30},
    "market1501/sq_rerank": {"rank1": 92.04, "mAP": 88.03},
    "market1501/mq_mean": {"rank1": 93.32, "mAP": 82.29},
    "market1501/mq_mean_rerank": {"rank1": 94.18, "mAP": 91.94},
    "dukemtmc_reid/sq": {"rank1": 78.86, "mAP": 61.89},
}

EVALS = [  # (key in a cell JSON, column label)
    ("sq", "single query"),
    ("sq_rerank", "single query + re-ranking"),
    ("mq_mean", "multi-query (mean)"),
    ("mq_max", "multi-query (max)"),
    ("mq_mean_rerank", "multi-query (mean) + re-ranking"),
]

# The anchor for the MobileNetV2 trunk (archs mnv2*): torchreid's model zoo, MobileNetV2 x1.0
# trained on a GPU at 256 x 128, single query, rank-1 / mAP (%).
TORCHREID_MOBILENETV2: dict[str, dict[str, float]] = {
    "market1501/sq": {"rank1": 85.6, "mAP": 67.3},
    "dukemtmc_reid/sq": {"rank1": 74.2, "mAP": 54.7},
}

TABLES = {
    "t1": "Table 1: softmax pre-training on the small sets, rank-1 (%) per test set",
    "t2": "Table 2: fine-tuned on the target (Market-1501 in the paper), rank-1 / mAP (%)",
    "t3": "Table 3: fine-tuned on DukeMTMC-reID, rank-1 / mAP (%)",
}


def load_cells(metrics_dir: str | Path) -> dict[str, dict[str, Any]]:
    cells = {}
    for path in sorted(Path(metrics_dir).glob("*.json")):
        try:
            cells[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from e
    return cells


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _pair(m: dict[str, Any] | None) -> str:
    if not m:
        return "not run"
    return f"{_fmt(m.get('rank1'))} / {_fmt(m.get('mAP'))}"


def is_paper_method(setup: dict[str, Any] | None) -> bool:
    """Whether a cell is the published method (mask + fusion arch, ranking loss), or not known.

    Why: the published figures are MaskReID's own; beside an ablation row (no mask, no fusion,
    triplet or softmax) they would read as that row's target, which the paper never reported.
    A cell that has not run, or whose record predates these keys, keeps the comparison.
    """
    setup = setup or {}
    arch, loss = setup.get("arch"), setup.get("loss")
    return (arch is None or str(arch).endswith("_mf")) and loss in (None, "rank")


def _paper(dataset: str, key: str, setup: dict[str, Any] | None) -> dict[str, float] | None:
    return PAPER.get(f"{dataset}/{key}") if is_paper_method(setup) else None


def _paper_pair(p: dict[str, float] | None) -> str:
    return f"{p['rank1']:.2f} / {p['mAP']:.2f}" if p else "—"


def _delta(m: dict[str, Any] | None, p: dict[str, float] | None) -> str:
    if not p or not m:
        return ""
    return f"{m['rank1'] - p['rank1']:+.2f} / {m['mAP'] - p['mAP']:+.2f}"


def mask_source_table(rows: dict[str, str], cells: dict[str, dict[str, Any]]) -> tuple[list[str], list[dict]]:
    """What masks do to re-ID: one row per cell of ``rows`` (cell -> label), same model and loss,
    only the masks differ. Not in the paper; the rows are whatever the params name."""
    lines = ["", "## Masks → re-ID: the same model fine-tuned and tested with each mask source", "",
             "| masks | dataset | cell | mask backend | single query rank-1 / mAP | + re-ranking | multi-query (mean) |",
             "|---|---|---|---|---|---|---|"]
    out = []
    for cell, label in rows.items():
        res = cells.get(cell) or {}
        backend = (res.get("setup") or {}).get("mask_backend") or ("none" if res else "—")
        lines.append(f"| {label} | {res.get('dataset', '—')} | {cell} | {backend} | {_pair(res.get('sq'))} | "
                     f"{_pair(res.get('sq_rerank'))} | "
                     f"{_pair(res.get('mq_mean')) if 'mq_mean' in res or not res else '—'} |")
        out.append({"cell": cell, "label": label, "mask_backend": backend,
                    **{k: res.get(k) for k in ("sq", "sq_rerank", "mq_mean")}})
    return lines, out


def build_report(cell_params: dict[str, dict[str, Any]], cells: dict[str, dict[str, Any]],
                 mask_table: dict[str, str] | None = None) -> tuple[str, dict]:
    """Markdown and JSON of Tables 1-3 for every configured cell (run or not), and the masks table."""
    lines = ["# MaskReID: reproduced tables", ""]
    lines.append(
        "Each row is one `evaluate@<cell>` stage (reports/cells/<cell>.json). 'paper' is the "
        "published figure where we have it, shown only beside cells of the published method (masks + "
        "fusion, ranking loss): an ablation row gets '—'. 'not run' means the stage has produced no "
        "metrics yet."
    )
    out: dict[str, Any] = {"tables": {}}
    for prefix, title in TABLES.items():
        names = [n for n in cell_params if n.startswith(prefix + "_")]
        if not names:
            continue
        lines += ["", f"## {title}", ""]
        table_rows = []
        if prefix == "t1":
            lines.append("| cell | model | test set | protocol | rank-1 | rank-5 | rank-10 | mAP |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for n in names:
                cfg, res = cell_params[n], cells.get(n)
                m = (res or {}).get("sq")
                row = [n, cfg["model"], cfg["dataset"], (res or {}).get("protocol", "—")]
                row += [_fmt(m.get(k)) if m else "not run" for k in ("rank1", "rank5", "rank10", "mAP")]
                lines.append("| " + " | ".join(row) + " |")
                table_rows.append({"cell": n, **cfg, "result": m})
        else:
            head = ("| cell | model | eval | ours rank-1 / mAP | paper rank-1 / mAP | ours − paper | "
                    "torchreid MobileNetV2 |")
            lines += [head, "|---|---|---|---|---|---|---|"]
            for n in names:
                cfg, res = cell_params[n], cells.get(n) or {}
                ds = cfg["dataset"]
                keys = [k for k, _ in EVALS if k in res] or ["sq"]
                subset = (res.get("setup") or {}).get("subset")
                for k in keys:
                    label = dict(EVALS)[k] + (" (subset†)" if subset else "")
                    m = res.get(k)
                    anchor = TORCHREID_MOBILENETV2.get(f"{ds}/{k}")
                    mnv2 = str((res.get("setup") or {}).get("arch", "")).startswith("mnv2")
                    anchor_s = f"{anchor['rank1']:.2f} / {anchor['mAP']:.2f}" if anchor and mnv2 else "—"
                    paper = _paper(ds, k, res.get("setup"))
                    lines.append(
                        f"| {n} | {cfg['model']} | {label} | {_pair(m)} | {_paper_pair(paper)} | {_delta(m, paper)} "
                        f"| {anchor_s} |"
                    )
                    table_rows.append({"cell": n, **cfg, "eval": k, "result": m, "paper": paper})
        if any((cells.get(n) or {}).get("setup", {}).get("subset") for n in names):
            lines += ["", "† evaluated on a seeded subset of the test identities (see `setup.subset`): a smaller "
                      "gallery than the paper's, so the difference to the paper is indicative only."]
        notes = sorted({json.dumps(c.get("setup", {}), sort_keys=True) for c in (cells.get(n) for n in names) if c})
        if notes:
            lines += ["", "Set-up of these cells (pre-training sets, mask backend, AP rule):", ""]
            lines += [f"- `{s}`" for s in notes]
        out["tables"][prefix] = table_rows
    if mask_table:
        unknown = sorted(set(mask_table) - set(cell_params))
        if unknown:
            raise ValueError(f"params mask_table names cells that are not configured: {unknown}")
        md, rows = mask_source_table(mask_table, cells)
        lines += md
        out["tables"]["masks"] = rows
    lines.append("")
    return "\n".join(lines), out
