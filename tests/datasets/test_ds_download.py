from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest
from ds_helpers import image_bytes, pack

from maskreid.datasets.base import ArchiveFile, get_dataset
from maskreid.datasets.download import (ChecksumMismatch, DatasetUnavailable, ensure_archive, resolve_source,
                                        verify_file)


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the bytes in ``server.files``, honouring ``Range: bytes=N-``; logs the ranges asked."""

    def do_GET(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files, srv.ranges = {}, []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def viper_zip(tmp_path):
    files = {f"VIPeR/cam_{c}/{i:03d}_0.bmp": image_bytes(".bmp", 48, 128, seed=i) for c in "ab" for i in range(3)}
    (tmp_path / "src").mkdir()
    return pack(files, tmp_path / "src" / "viper", "zip")


def spec_for(server, data, **kw):
    server.files["/VIPeR.v1.0.zip"] = data
    url = f"http://127.0.0.1:{server.server_address[1]}/VIPeR.v1.0.zip"
    af = ArchiveFile("VIPeR.v1.0.zip", url=url, **kw)
    return replace(get_dataset("viper"), files=(af,))


def test_download_verify_rename_and_reuse(server, viper_zip, tmp_path):
    data = viper_zip.read_bytes()
    spec = spec_for(server, data, sha256=hashlib.sha256(data).hexdigest())
    out = ensure_archive(spec, tmp_path / "archives")
    assert out == tmp_path / "archives" / "VIPeR.v1.0.zip" and out.read_bytes() == data
    assert not (tmp_path / "archives" / "VIPeR.v1.0.zip.part").exists()
    assert len(list(spec.iter_rows(out))) == 6
    ensure_archive(spec, tmp_path / "archives")  # second call: verified local copy, no request
    assert server.ranges == [None]


def test_resume_from_partial_file_with_md5(server, viper_zip, tmp_path):
    data = viper_zip.read_bytes()
    spec = spec_for(server, data, md5=hashlib.md5(data).hexdigest())
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "VIPeR.v1.0.zip.part").write_bytes(data[:1000])
    out = ensure_archive(spec, tmp_path / "archives")
    assert server.ranges == ["bytes=1000-"]
    assert out.read_bytes() == data


def test_checksum_mismatch_leaves_nothing_that_looks_verified(server, viper_zip, tmp_path):
    data = viper_zip.read_bytes()
    spec = spec_for(server, data, sha256="0" * 64)
    with pytest.raises(DatasetUnavailable) as e:
        ensure_archive(spec, tmp_path / "archives")
    msg = str(e.value)
    assert "VIPeR.v1.0.zip" in msg and "0" * 64 in msg and "expected" in msg
    assert str((tmp_path / "archives" / "VIPeR.v1.0.zip").resolve()) in msg
    assert list((tmp_path / "archives").iterdir()) == []


def test_404_and_withdrawn_sets_say_what_to_get_and_where(server, tmp_path):
    spec = spec_for(server, b"")
    spec = replace(spec, files=(replace(spec.archive, url=spec.archive.url.replace("VIPeR.v1", "gone")),))
    with pytest.raises(DatasetUnavailable, match=r"404.*put it at .*VIPeR\.v1\.0\.zip"):
        ensure_archive(spec, tmp_path / "a")
    duke = get_dataset("dukemtmc_reid")
    with pytest.raises(DatasetUnavailable) as e:
        ensure_archive(duke, tmp_path / "a")
    msg = str(e.value)
    assert "DukeMTMC-reID.zip" in msg and "md5 2f93496f9b516d1ee5ef51c1d5e7d601" in msg and "withdrawn" in msg
    assert str((tmp_path / "a" / "DukeMTMC-reID.zip").resolve()) in msg


def test_user_source_and_corrupt_local_archive(tmp_path, viper_zip):
    spec = get_dataset("viper")
    assert ensure_archive(spec, tmp_path / "a", source=viper_zip) == viper_zip
    with pytest.raises(DatasetUnavailable, match="does not exist"):
        ensure_archive(spec, tmp_path / "a", source=tmp_path / "nope.zip")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "VIPeR.v1.0.zip").write_bytes(viper_zip.read_bytes())  # not the official bytes
    with pytest.raises(DatasetUnavailable, match=r"md5 is [0-9a-f]{32}, expected 1c2d9fc1cc800332567a0da25a1ce68c"):
        ensure_archive(spec, tmp_path / "a")


def test_verify_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    assert verify_file(p, sha256=sha, md5=hashlib.md5(b"abc").hexdigest()) == sha
    with pytest.raises(ChecksumMismatch, match=str(p)):
        verify_file(p, md5="f" * 32)


def test_a_relative_source_starts_at_the_source_root_when_set(tmp_path, viper_zip, monkeypatch):
    """A queued experiment runs in a copy under .dvc/tmp/exps: ../shared/... must lead back."""
    spec = get_dataset("viper")
    work = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    rel = viper_zip.name
    monkeypatch.delenv("MASKREID_SOURCE_ROOT", raising=False)
    with pytest.raises(DatasetUnavailable, match=viper_zip.name):  # the copy has no such file
        ensure_archive(spec, tmp_path / "a", source=rel)
    monkeypatch.setenv("MASKREID_SOURCE_ROOT", str(viper_zip.parent))
    assert ensure_archive(spec, tmp_path / "a", source=rel) == viper_zip.parent / rel
    assert resolve_source(viper_zip) == viper_zip  # an absolute path is left alone
    with pytest.raises(DatasetUnavailable, match=r"relative to \$MASKREID_SOURCE_ROOT"):
        ensure_archive(spec, tmp_path / "a", source="nope.zip")
