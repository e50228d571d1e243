"""DVC stage `finetune`: see maskreid.pipeline.run_finetune."""

from maskreid.pipeline import run_finetune, stage_main

if __name__ == "__main__":
    stage_main(run_finetune)
