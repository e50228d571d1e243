"""DVC stage `pretrain`: see maskreid.pipeline.run_pretrain."""

from maskreid.pipeline import run_pretrain, stage_main

if __name__ == "__main__":
    stage_main(run_pretrain)
