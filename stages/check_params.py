"""DVC stage `check_params`: see maskreid.pipeline.check.run_check_params."""

import sys
from pathlib import Path

# this checkout's own code, also when DVC runs a queued experiment in a temporary copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskreid.pipeline import stage_main  # noqa: E402
from maskreid.pipeline.check import run_check_params  # noqa: E402

if __name__ == "__main__":
    stage_main(run_check_params)
