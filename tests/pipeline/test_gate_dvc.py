"""Issue 16, defect 4, through DVC itself: a bad value stops `dvc repro` at `check_params`,
before DVC deletes the out of a stage that would otherwise re-run.

The unit tests (tests/test_params_check.py) check the rules; this one checks the wiring: that every
stage really waits for the gate. It runs real `dvc repro` in a scratch copy of the pipeline (the
tracked stages/, src/, conf/ and dvc.yaml) on the demo's small generated set: about 20 s.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from maskreid.config import compose_params

REPO = Path(__file__).resolve().parents[2]
DS = "synthetic_small"

pytestmark = pytest.mark.skipif(
    shutil.which("dvc") is None or shutil.which("git") is None or not (REPO / ".git").exists(),
    reason="needs git, dvc and a git checkout",
)


def _scratch(tmp: Path) -> Path:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for rel in tracked.stdout.split():
        if rel.startswith(("stages/", "src/", "conf/")) or rel == "dvc.yaml":
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
    return tmp


def _params(tmp: Path, **changes) -> None:
    compose_params(["profile=demo"], output=tmp / "params.yaml", conf_dir=tmp / "conf")
    p = yaml.safe_load((tmp / "params.yaml").read_text())
    p["datasets"][DS]["generate"]["num_ids"] = changes.get("num_ids", 12)
    if "lam" in changes:
        p["loss"]["lambda"] = changes["lam"]
    (tmp / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _repro(tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", "repro", f"ingest@{DS}"], cwd=tmp, capture_output=True, text=True)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_a_bad_value_stops_dvc_at_the_gate_and_keeps_the_outs(tmp_path):
    tmp = _scratch(tmp_path)
    _params(tmp)
    first = _repro(tmp)
    assert first.returncode == 0, first.stdout + first.stderr
    images = tmp / "data" / "images" / DS
    before = _digest(images)
    receipt = (tmp / "data" / "receipts" / f"{DS}.json").read_bytes()

    # a changed dataset (ingest would delete and rebuild its out) together with a bad lambda
    _params(tmp, num_ids=14, lam=-1)
    bad = _repro(tmp)
    assert bad.returncode != 0
    assert "loss.lambda = -1: must be a number >= 0" in bad.stdout + bad.stderr
    assert _digest(images) == before
    assert (tmp / "data" / "receipts" / f"{DS}.json").read_bytes() == receipt

    # the value mended, the same command goes through and rebuilds the changed set
    _params(tmp, num_ids=14)
    good = _repro(tmp)
    assert good.returncode == 0, good.stdout + good.stderr
    assert _digest(images) != before
