"""OpenCV GrabCut from the crop's central rectangle: a weights-free, CPU-only baseline.

Why: it needs no model file, so it is the fallback that always runs, and it shows how much a
learned segmenter adds. Pedestrian crops are centred on the person, so a rectangle inset by small
margins is a reasonable "probably foreground" seed. The output is hard (0 or 1).
"""

from __future__ import annotations

import cv2
import numpy as np

from maskreid.segment.base import Segmenter, check_batch, fingerprint_of


class GrabCutSegmenter(Segmenter):
    """Params: ``margin_x``/``margin_y`` (fraction of width/height left outside the seed rectangle
    on each side), ``iterations``, ``seed`` (OpenCV RNG seed, for deterministic GMM init)."""

    name = "grabcut"

    def __init__(self, margin_x: float = 0.1, margin_y: float = 0.03, iterations: int = 5, seed: int = 0):
        if not (0 <= margin_x < 0.5 and 0 <= margin_y < 0.5):
            raise ValueError(f"grabcut margins must be in [0, 0.5), got {margin_x}, {margin_y}")
        self.margin_x, self.margin_y, self.iterations, self.seed = float(margin_x), float(margin_y), int(iterations), int(seed)
        self._fp = fingerprint_of("grabcut", None, dict(margin_x=self.margin_x, margin_y=self.margin_y,
                                                         iterations=self.iterations, seed=self.seed,
                                                         opencv=cv2.__version__))

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _one(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        x0, y0 = int(round(w * self.margin_x)), int(round(h * self.margin_y))
        rect = (x0, y0, max(w - 2 * x0, 1), max(h - 2 * y0, 1))
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)
        cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, self.iterations,
                    cv2.GC_INIT_WITH_RECT)
        return ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        check_batch(batch)
        return [self._one(img) for img in batch]
