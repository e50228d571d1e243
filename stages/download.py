"""DVC stage `download`: see maskreid.pipeline.run_download."""

from maskreid.pipeline import run_download, stage_main

if __name__ == "__main__":
    stage_main(run_download)
