"""The report's section on runs made outside the DVC graph on a lent GPU
(``benchmarks/gpu_paper_market.py run``): their ``cells.json`` files are committed under
``metrics/gpu/`` because the lent machine is gone after the call, so the report reads them from
there and shows them apart from the pipeline's cells. It lives beside the report stage rather than
in ``maskreid.report`` because every evaluate stage depends on that whole package (for its rank-list
figure): a new file there would make every committed cell look stale."""

from __future__ import annotations

import json
from pathlib import Path

# cells.json keys -> column: flip-averaged features first (as the evaluate stage makes them)
EVALS = (("sq_flip", "single query"), ("sq_rerank_flip", "+ re-ranking"),
         ("sq", "single query, no flip"), ("sq_rerank", "+ re-ranking, no flip"),
         ("mq_mean_flip", "multi-query"), ("mq_mean_rerank_flip", "multi-query + re-ranking"))


def load_gpu_runs(folder: Path) -> dict[str, dict]:
    """``{file stem: cells}`` for every ``*.json`` in ``folder`` (none when it does not exist).
    A file without the script's keys is an error naming it, not a silent gap in the table."""
    runs = {}
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        cells = json.loads(path.read_text())
        missing = [k for k in ("arch", "device", "rank1", "mAP", "train") if k not in cells]
        if missing:
            raise KeyError(f"{path}: not a gpu_paper_market.py cells.json, lacks {missing}")
        runs[path.stem] = cells
    return runs


def _pair(cells: dict, key: str) -> str:
    r, m = cells["rank1"].get(key), cells["mAP"].get(key)
    return "—" if r is None or m is None else f"{r:.2f} / {m:.2f}"


def _start(train: dict) -> str:
    """Where a run's weights started: from scratch, or a softmax pre-training (``--pretrain-bundle``)."""
    pre = train.get("pretrain")
    if not pre:
        return "scratch"
    return f"softmax on {pre.get('dataset')}, {pre.get('steps')} steps ({pre.get('train_s')} s)"


def gpu_runs_table(runs: dict[str, dict]) -> tuple[str, list[dict]]:
    """Markdown section and its JSON rows: one line per run, how it trained and what it scored."""
    if not runs:
        return "", []
    lines = ["", "## Runs on a lent GPU (benchmarks/gpu_paper_market.py, outside the DVC graph)", "",
             "Rank-1 / mAP (%), the evaluate stage's scoring on the full official protocol; "
             "`metrics/gpu/<run>.json`.", "",
             "| run | arch | input | device | start | steps (epochs) | img/s | train s | "
             + " | ".join(label for _, label in EVALS) + " |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(EVALS)]
    rows = []
    for name, c in runs.items():
        t = c["train"] or {}
        size = "×".join(str(v) for v in c.get("input_size", [])) or "—"
        start = _start(t)
        lines.append(f"| {name} | {c['arch']} | {size} | {c['device']} | {start} | "
                     f"{t.get('steps')} ({t.get('epochs')}) | "
                     f"{t.get('img_per_s')} | {t.get('train_s')} | "
                     + " | ".join(_pair(c, key) for key, _ in EVALS) + " |")
        rows.append({"run": name, "arch": c["arch"], "device": c["device"], "start": start, "steps": t.get("steps"),
                     "img_per_s": t.get("img_per_s"), "rank1": c["rank1"], "mAP": c["mAP"]})
    return "\n".join(lines) + "\n", rows
