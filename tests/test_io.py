"""maskreid.io: atomic writes keep the user's umask (mkstemp alone would leave 0600), and a write
that runs out of room names its file."""

import os
import re

import pytest

from maskreid.io import WriteFailed, write_json


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
