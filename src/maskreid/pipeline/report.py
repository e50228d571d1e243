"""Stage report: every cell's metrics -> reports/tables.md, tables.json and the tracked
metrics/headline.json; CMC and training curves of this profile -> reports/curves (the plots page)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from maskreid.config import get
from maskreid.io import read_json, write_json, write_text
from maskreid.pipeline import METRICS, REPORTS
from maskreid.pipeline.gpu_runs import gpu_runs_table, load_gpu_runs
from maskreid.pipeline.train import RUN_SECTIONS, run_of, start_run
from maskreid.report.replicates import replicate_table
from maskreid.report.validation import validation_table
from maskreid.report.variants import variant_table

ABLATIONS = (("arch", "Masks and fusion: one recipe trained with each arch"),
             ("loss", "Losses: one recipe trained with each loss"))

def run_report(_key: str, params: dict) -> dict:
    from maskreid.report import build_report, load_cells

    cells = load_cells(REPORTS / "cells")
    cell_params = dict(get(params, "cells"))
    md, js = build_report(cell_params, cells, mask_table=get(params, "mask_table", {}) or {})
    groups = replicate_groups(cell_params, params)
    if groups:
        rep_md, js["replicates"] = replicate_table(groups, cells)
        md = _append(md, rep_md)
    for field, title in ABLATIONS:
        groups = variant_groups(cell_params, params, field)
        if groups:
            var_md, js[f"by_{field}"] = variant_table(title, field, groups, cells)
            md = _append(md, var_md)
    val = validation_rows(params)
    if val:
        md += validation_table(val)
        js["validate"] = val
    gpu_md, gpu_rows = gpu_runs_table(load_gpu_runs(METRICS / "gpu"))
    if gpu_rows:
        md += gpu_md
        js["gpu_runs"] = gpu_rows
    write_text(REPORTS / "tables.md", md)
    write_json(REPORTS / "tables.json", js)
    write_json(METRICS / "headline.json", headline_metrics(cell_params, cells, val))
    runs = {kind: list(get(params, key, {}) or {}) for kind, key in RUN_SECTIONS.items()}
    collect_plots(list(cell_params), runs, REPORTS / "cmc", Path("dvclive"), REPORTS / "curves")
    return js


def _append(md: str, lines: list[str]) -> str:
    """A section's lines after the report so far, one newline between them."""
    return md.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def _recipes(cell_params: dict, params: dict, drop: tuple[str, ...]):
    """(cell, run, start, recipe key) for every cell with a known run; the key is the run's kind,
    the cell's dataset and masks, and every run key but ``drop``, with ``init`` replaced by the
    start's recipe (also without ``drop``): a chain re-made from another start is the same recipe."""
    for name, cell in cell_params.items():
        kind, run = run_of(cell.get("model", ""), params)
        if not run:
            continue
        start = start_run(run, params)
        recipe = {k: v for k, v in run.items() if k not in drop}
        if start:  # the pre-training's recipe, not its name
            recipe["init"] = {k: v for k, v in start.items() if k not in drop}
        yield name, run, start, json.dumps([kind, cell.get("dataset"), cell.get("masks"), recipe],
                                           sort_keys=True, default=str)


def _seed_label(run: dict, start: dict, default: int) -> str:
    label = str(int(run.get("seed", default)))
    if int(start.get("seed", default)) != default:
        label += f", start {int(start['seed'])}"
    return label


def replicate_groups(cell_params: dict, params: dict) -> dict[str, dict[str, str]]:
    """Cells whose models are the same run but for ``seed`` (same kind, dataset, masks and every
    other run key), their ``init`` pre-trainings the same run but for theirs: first cell ->
    {cell: its seed, and its start's where that is not the profile's}, for groups of two or more."""
    default = int(get(params, "seed", 0))
    groups: dict[str, dict[str, str]] = {}
    for name, run, start, key in _recipes(cell_params, params, ("seed",)):
        groups.setdefault(key, {})[name] = _seed_label(run, start, default)
    return {next(iter(g)): g for g in groups.values() if len(g) > 1}


def variant_groups(cell_params: dict, params: dict, field: str) -> dict[str, dict[str, dict[str, str]]]:
    """Cells whose runs differ only in ``field`` (``arch``, ``loss``) and seed, their starts likewise:
    first cell -> {value: {cell: seed label}}, for recipes run with two or more values. Why: an
    ablation is read across runs that share everything else, which the cell names only suggest."""
    default = int(get(params, "seed", 0))
    groups: dict[str, dict[str, dict[str, str]]] = {}
    for name, run, start, key in _recipes(cell_params, params, ("seed", field)):
        value = str(run.get(field))
        groups.setdefault(key, {}).setdefault(value, {})[name] = _seed_label(run, start, default)
    return {next(iter(next(iter(g.values())))): g for g in groups.values() if len(g) > 1}


def validation_rows(params: dict, results_dir: Path = REPORTS / "validate") -> dict[str, dict]:
    """The profile's validation results that exist, by run key (for the report)."""
    rows = {}
    runs = {**(get(params, "validate.runs", {}) or {}), **(get(params, "validate.finetune_runs", {}) or {})}
    for key in runs:
        path = results_dir / f"{key}.json"
        if path.exists():
            rows[key] = read_json(path)
    return rows


def headline_metrics(cell_params: dict, cells: dict, validation: dict | None = None) -> dict:
    """The tracked metric: ``{cell: {"rank1": …, "mAP": …}}``, single query, configured cells only,
    then ``val_<run>`` for each validation run (held-out training identities), so that a queued
    sweep reads in ``dvc exp show``.

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
    for key, row in (validation or {}).items():
        out[f"val_{key}"] = {"rank1": row["rank1"], "mAP": row["mAP"]}
    return out


CURVES = ("train/loss", "val/")  # what the plots page shows: the loss, and validation where logged


def collect_plots(cells: list[str], runs: dict[str, list[str]], cmc_dir: Path, live_root: Path,
                  out_dir: Path) -> list[Path]:
    """The plots page of this profile: ``cmc/<cell>.json`` for every configured cell that ran,
    ``training/<kind>_<run>_<metric>.json`` = [{step, <metric>}, ...] for every configured run.

    Why not plot reports/cmc and dvclive's folders directly: those also hold what other profiles
    left in the workspace (the committed real_cpu cells and curves are in git), each dvclive
    folder also holds dvclive's ``metrics.json``, which ``dvc plots`` tries to read as a plot (its
    "argument of type 'nonetype'" warnings), and a profile without some kind of run has no folder
    for it (a "failed to load" error). Written to a sibling folder, then renamed into place.
    """
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "cmc").mkdir(parents=True)
    (tmp / "training").mkdir()
    for cell in cells:
        if (cmc_dir / f"{cell}.json").exists():
            shutil.copyfile(cmc_dir / f"{cell}.json", tmp / "cmc" / f"{cell}.json")
    for kind, names in runs.items():
        for name in names:
            metrics = live_root / kind / name / "plots" / "metrics"
            for tsv in sorted(metrics.rglob("*.tsv")):
                curve = tsv.relative_to(metrics).with_suffix("").as_posix()
                if not any(curve == c or (c.endswith("/") and curve.startswith(c)) for c in CURVES):
                    continue
                metric = curve.rsplit("/", 1)[-1]
                with tsv.open(newline="") as f:
                    rows = [{"step": int(r["step"]), metric: float(r[metric])}
                            for r in csv.DictReader(f, delimiter="\t")]
                write_json(tmp / "training" / f"{kind}_{name}_{curve.replace('/', '_')}.json", rows)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*.json"))
