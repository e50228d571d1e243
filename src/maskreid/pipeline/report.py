"""Stage report: every cell's metrics -> reports/tables.md and tables.json."""

from __future__ import annotations

from maskreid.config import get
from maskreid.io import write_json, write_text
from maskreid.pipeline import REPORTS
from maskreid.pipeline.train import variant_cell

def run_report(_key: str, params: dict) -> dict:
    from maskreid.report import build_report, load_cells

    cells = load_cells(REPORTS / "cells")
    variants = get(params, "mask_variants", {}) or {}
    cell_params = {**get(params, "cells"), **dict(variant_cell(k, v) for k, v in variants.items())}
    md, js = build_report(cell_params, cells, mask_table=get(params, "mask_table", {}) or {})
    write_text(REPORTS / "tables.md", md)
    write_json(REPORTS / "tables.json", js)
    return js

