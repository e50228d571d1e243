"""maskreid.io: atomic writes keep the user's umask (mkstemp alone would leave 0600), and a write
that runs out of room names its file."""

import hashlib
import os
import re

import pytest
import torch

from maskreid.io import WriteFailed, file_digest, file_digests, torch_save, write_json


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(tmp_path, disk_full_after):
    """Python's own message was `[Errno 27] File too large` (ENOSPC: `No space left on device`),
    naming no file."""
    path = tmp_path / "m.json"
    with pytest.raises(WriteFailed, match=re.escape(f"{path}: writing it failed part-way, probably a full disk")):
        with disk_full_after(100):
            write_json(path, {"a": "x" * 1000})
    assert list(tmp_path.iterdir()) == []


def test_torch_save_writes_the_same_bytes_on_every_run(tmp_path):
    """torch names the zip's inner folder after the file written: the random part of the temp name
    must not leak into it, or every run would write other bytes (checkpoints are DVC outs). The
    bytes are those of the segmenter trainer's earlier writer (save to `.<name>.tmp<pid>`, rename)."""
    obj = {"w": torch.arange(6.0), "step": 3}
    torch_save(obj, tmp_path / "a" / "segmenter.pt")
    first = (tmp_path / "a" / "segmenter.pt").read_bytes()
    torch_save(obj, tmp_path / "a" / "segmenter.pt")
    torch.save(obj, tmp_path / ".segmenter.pt.tmp1234")
    assert (tmp_path / "a" / "segmenter.pt").read_bytes() == first == (tmp_path / ".segmenter.pt.tmp1234").read_bytes()
    assert os.listdir(tmp_path / "a") == ["segmenter.pt"]


def test_file_digests_in_one_read(tmp_path):
    """The one file-hash helper (archives' receipts and checks, segmenter weights' fingerprints)."""
    data = os.urandom(3 * (1 << 20) + 7)  # more than one read
    (tmp_path / "f").write_bytes(data)
    both = {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert file_digests(tmp_path / "f") == both
    assert file_digest(tmp_path / "f") == both["sha256"] and file_digest(tmp_path / "f", "md5") == both["md5"]
    with pytest.raises(ValueError, match="unsupported digest 'sha1'"):
        file_digest(tmp_path / "f", "sha1")
