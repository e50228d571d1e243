"""DVC stage `evaluate`: see maskreid.pipeline.run_evaluate."""

from maskreid.pipeline import run_evaluate, stage_main

if __name__ == "__main__":
    stage_main(run_evaluate)
