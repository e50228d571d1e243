"""The masks that ship with a dataset (the ``gt_mask`` shard column; the synthetic set has one).

Why a backend: the upper bound for the mask stream runs through exactly the same stage, cache and
quality report as the learned segmenters.
"""

from __future__ import annotations

import numpy as np

from maskreid.segment.base import Segmenter, fingerprint_of
from maskreid.store.shards import decode_mask


class GroundTruthSegmenter(Segmenter):
    name = "ground_truth"
    needs_columns = ("gt_mask",)

    def __init__(self, column: str = "gt_mask"):
        self.column = column
        self.needs_columns = (column,)
        self._fp = fingerprint_of("ground_truth", None, {"column": column})

    @property
    def fingerprint(self) -> str:
        return self._fp

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        raise TypeError("the ground_truth backend reads the dataset's gt_mask column: call predict_rows "
                        "(segment_dataset does), not predict on bare images")

    def predict_rows(self, images: list[np.ndarray], rows: list[dict]) -> list[np.ndarray]:
        out = []
        for img, row in zip(images, rows):
            data = row.get(self.column)
            if data is None:
                raise ValueError(f"image {row.get('image_id')!r}: no {self.column!r} in its shard row; the "
                                 "ground_truth backend needs a dataset that ships masks (e.g. synthetic)")
            m = decode_mask(data, row.get("image_id", "<unknown>"))
            if m.shape != img.shape[:2]:
                raise ValueError(f"image {row.get('image_id')!r}: {self.column} is {m.shape}, image is {img.shape[:2]}")
            out.append(m.astype(np.float32) / 255.0)
        return out
