"""Issue 16, defect 1: a replaced archive (or an edited source folder) must reach ingest.

DVC cannot hash a file outside the pipeline, so the `download` stage runs on every repro
(`always_changed`) and writes the source's content digest into the receipt; ingest depends on the
receipt, so it re-runs exactly when the digest changes, and not otherwise.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
import yaml

from maskreid.datasets.download import DatasetUnavailable
from maskreid.io import read_json
from maskreid.pipeline import data

REPO = Path(__file__).resolve().parents[2]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    src = path.parent / f"{path.stem}_src"
    src.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, payload in members.items():
            f = src / name
            f.write_bytes(payload)
            tf.add(f, arcname=name)
    return path


def _params(source: Path) -> dict:
    return {"datasets": {"viper": {"source": str(source)}}, "paths": {"archives": "data/archives"}}


def test_a_replaced_archive_changes_the_receipt_and_an_untouched_one_does_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    archive = _tar(tmp_path / "viper.tar", {"a.bmp": b"first"})
    first = data.run_download("viper", _params(archive))
    assert first["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    receipt = Path("data/receipts/viper.json")
    before = receipt.read_bytes()

    data.run_download("viper", _params(archive))  # same archive: byte-identical receipt
    assert receipt.read_bytes() == before

    _tar(archive, {"a.bmp": b"second release"})  # overwritten in place, same path
    data.run_download("viper", _params(archive))
    assert receipt.read_bytes() != before
    assert read_json(receipt)["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_an_edited_source_folder_changes_the_receipt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "VIPeR"
    (folder / "cam_a").mkdir(parents=True)
    (folder / "cam_a" / "000_45.bmp").write_bytes(b"x")
    seen = set()
    for change in (
        lambda: None,
        lambda: (folder / "cam_a" / "000_45.bmp").write_bytes(b"y"),  # edited
        lambda: (folder / "cam_a" / "001_45.bmp").write_bytes(b"y"),  # added
        lambda: (folder / "cam_a" / "001_45.bmp").rename(folder / "cam_a" / "002_45.bmp"),  # renamed
        lambda: (folder / "cam_a" / "002_45.bmp").unlink(),  # removed
    ):
        change()
        r = data.run_download("viper", _params(folder))
        assert r["kind"] == "folder"
        seen.add(r["sha256"])
    # every state but the last differs; the last equals the one-edited-file state
    assert len(seen) == 4
    assert data.folder_digest(folder) == r["sha256"]


def test_download_stage_reruns_every_repro_and_ingest_depends_on_its_receipt():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["download"]["do"].get("always_changed") is True
    assert "data/receipts/${key}.json" in stages["ingest"]["do"]["deps"]
    # the receipt is the only thing ingest knows of the archive: no other stage may skip it
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stages["download"]["do"]["outs"]]
    assert outs == ["data/receipts/${key}.json"]


def test_a_missing_source_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetUnavailable, match="nowhere.tar does not exist"):
        data.run_download("viper", _params(tmp_path / "nowhere.tar"))


def test_a_queued_experiments_copy_writes_the_same_receipt(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs stages in a copy under .dvc/tmp/exps/: with MASKREID_SOURCE_ROOT
    the relative source is found there, and the receipt is byte-identical, so ingest is not re-run."""
    archive = _tar(tmp_path / "shared" / "viper.tar", {"a.bmp": b"first"})
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MASKREID_SOURCE_ROOT", raising=False)
    params = {"datasets": {"viper": {"source": "../shared/viper.tar"}}, "paths": {"archives": "data/archives"}}
    data.run_download("viper", params)
    in_repo = Path("data/receipts/viper.json").read_bytes()

    copy = repo / ".dvc" / "tmp" / "exps" / "tmpabc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(DatasetUnavailable, match="shared/viper.tar"):
        data.run_download("viper", params)
    monkeypatch.setenv("MASKREID_SOURCE_ROOT", str(repo))
    data.run_download("viper", params)
    assert Path("data/receipts/viper.json").read_bytes() == in_repo
