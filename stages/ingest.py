"""DVC stage `ingest`: see maskreid.pipeline.run_ingest."""

from maskreid.pipeline import run_ingest, stage_main

if __name__ == "__main__":
    stage_main(run_ingest)
