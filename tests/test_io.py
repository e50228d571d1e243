"""maskreid.io: atomic writes keep the user's umask (mkstemp alone would leave 0600)."""

import os

from maskreid.io import write_json


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644
