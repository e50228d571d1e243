"""Stage report: every cell's metrics -> reports/tables.md and tables.json; training curves ->
reports/curves (the plots page)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from maskreid.config import get
from maskreid.io import write_json, write_text
from maskreid.pipeline import METRICS, REPORTS
from maskreid.pipeline.train import variant_cell

def run_report(_key: str, params: dict) -> dict:
    from maskreid.report import build_report, load_cells

    cells = load_cells(REPORTS / "cells")
    variants = get(params, "mask_variants", {}) or {}
    cell_params = {**get(params, "cells"), **dict(variant_cell(k, v) for k, v in variants.items())}
    md, js = build_report(cell_params, cells, mask_table=get(params, "mask_table", {}) or {})
    write_text(REPORTS / "tables.md", md)
    write_json(REPORTS / "tables.json", js)
    write_json(METRICS / "headline.json", headline_metrics(cell_params, cells))
    collect_curves(Path("dvclive"), REPORTS / "curves")
    return js


def headline_metrics(cell_params: dict, cells: dict) -> dict:
    """The tracked metric: ``{cell: {"rank1": …, "mAP": …}}``, single query, configured cells only.

    Why one file with only this pair: ``dvc exp show`` prefixes each column with its file when
    there are several metric files and prints every number, so per-cell files with five
    evaluations each made a 500-column table; the other evaluations stay in
    ``metrics/cells/<cell>.json`` (plain outs, ``dvc metrics diff --targets metrics/cells``).
    """
    out = {}
    for name in cell_params:
        sq = (cells.get(name) or {}).get("sq")
        if sq:
            out[name] = {"rank1": sq["rank1"], "mAP": sq["mAP"]}
    return out


CURVES = ("train/loss", "val/")  # what the plots page shows: the loss, and validation where logged


def collect_curves(live_root: Path, out_dir: Path) -> list[Path]:
    """One small JSON per run and curve: ``<kind>_<run>_<metric>.json`` = [{step, <metric>}, ...].

    Why not plot dvclive's folders directly: each also holds dvclive's ``metrics.json``, which
    ``dvc plots`` tries to read as a plot (its "argument of type 'nonetype'" warnings), and a
    profile without a pre-training or segmenter stage has no such folder at all (a "failed to
    load" error). These files exist for exactly the runs of the profile, one plot each.
    """
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for run in sorted(p for p in live_root.glob("*/*") if (p / "plots" / "metrics").is_dir()):
        kind = run.parent.name
        for tsv in sorted((run / "plots" / "metrics").rglob("*.tsv")):
            name = tsv.relative_to(run / "plots" / "metrics").with_suffix("").as_posix()
            if not any(name == c or (c.endswith("/") and name.startswith(c)) for c in CURVES):
                continue
            metric = name.rsplit("/", 1)[-1]
            with tsv.open(newline="") as f:
                rows = [{"step": int(r["step"]), metric: float(r[metric])}
                        for r in csv.DictReader(f, delimiter="\t")]
            write_json(tmp / f"{kind}_{run.name}_{name.replace('/', '_')}.json", rows)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return sorted(out_dir.iterdir())

