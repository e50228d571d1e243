from pathlib import Path

import yaml
from typer.testing import CliRunner

from maskreid.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_datasets_lists_archives_and_how_to_obtain():
    r = runner.invoke(app, ["datasets"])
    assert r.exit_code == 0, r.output
    assert "Market-1501-v15.09.15.zip" in r.output and "65005ab7d12ec1c44de4eeafe813e68a" in r.output
    assert "viper" in r.output and "how to obtain" in r.output


def test_params_composes_a_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # conf/ is read from the working directory, as DVC does
    out = tmp_path / "p.yaml"
    r = runner.invoke(app, ["params", "--profile", "demo", "-S", "loss.lambda=5", "--output", str(out)])
    assert r.exit_code == 0, r.output
    p = yaml.safe_load(out.read_text())
    assert p["loss"]["lambda"] == 5 and "synthetic" in p["datasets"]


def test_card_of_a_missing_dataset_says_what_to_run(tmp_path):
    r = runner.invoke(app, ["card", "market1501", "--metrics-dir", str(tmp_path)])
    assert r.exit_code == 1 and "dvc repro ingest@market1501" in r.output


def test_params_refuses_a_bad_value_and_keeps_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "p.yaml"
    out.write_text("seed: 0\n")
    r = runner.invoke(app, ["params", "--profile", "demo", "-S", "loss.lambda=-1", "--output", str(out)])
    assert r.exit_code == 1 and "loss.lambda = -1: must be a number >= 0" in r.output
    assert out.read_text() == "seed: 0\n" and [p.name for p in tmp_path.iterdir()] == ["p.yaml"]


def test_query_refuses_a_non_positive_top():
    r = runner.invoke(app, ["query", "any_cell", "market1501/x.jpg", "--top", "-1"])
    assert r.exit_code == 2 and "--top" in r.output and "greater than or equal to 1" in r.output
