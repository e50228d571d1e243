"""DVC stage `report`: see maskreid.pipeline.run_report."""

from maskreid.pipeline import run_report, stage_main

if __name__ == "__main__":
    stage_main(run_report)
