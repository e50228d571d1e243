"""DVC stage `splits`: see maskreid.pipeline.run_splits."""

from maskreid.pipeline import run_splits, stage_main

if __name__ == "__main__":
    stage_main(run_splits)
