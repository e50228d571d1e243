"""DVC stage `segment`: see maskreid.pipeline.run_segment."""

from maskreid.pipeline import run_segment, stage_main

if __name__ == "__main__":
    stage_main(run_segment)
