"""DVC stage `validate_finetune`: see maskreid.pipeline.validate.run_validate_finetune."""

import sys
from pathlib import Path

# this checkout's own code, also when DVC runs a queued experiment in a temporary copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from maskreid.pipeline import stage_main  # noqa: E402
from maskreid.pipeline.validate import run_validate_finetune  # noqa: E402

if __name__ == "__main__":
    stage_main(run_validate_finetune)
