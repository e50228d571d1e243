"""DVC stage `train_segmenter`: see maskreid.pipeline.run_train_segmenter."""

from maskreid.pipeline import run_train_segmenter, stage_main

if __name__ == "__main__":
    stage_main(run_train_segmenter)
