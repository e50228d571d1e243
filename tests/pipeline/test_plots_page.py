"""`dvc plots show` on the committed results: one plot per cell and per run, no load errors."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("dvc") is None, reason="needs the dvc command")
def test_plots_page_has_a_titled_plot_per_cell_and_run_and_no_errors():
    res = subprocess.run(["dvc", "plots", "show", "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "nonetype" not in res.stderr.lower() and "failed to load" not in res.stderr.lower(), res.stderr
    page = json.loads(res.stdout)
    assert not page.get("errors"), page.get("errors")
    files = sorted(str(p.relative_to(REPO)) for d in ("reports/curves/cmc", "reports/curves/training")
                   for p in (REPO / d).glob("*.json"))
    assert files and sorted(page["data"]) == files
    for name, plots in page["data"].items():
        spec = plots[0]["content"]
        assert spec["title"]["text"] == name  # which cell or run, readable on the page
        assert spec["data"]["values"], name
