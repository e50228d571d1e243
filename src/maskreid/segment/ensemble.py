"""Masks from two segmenters at once: the mean of their person probabilities.

Why: the Market-trained segmenter and the MediaPipe ``pose`` preset fail on different crops (on
Duke they agree at IoU 0.69 mean, 0.40 p10), so their mean keeps what both see and lets each cover
the other's misses; the issue that asked for it (18) measured each alone on Duke at about 0.76
mean IoU. Each member's probability is first rounded to the 8-bit steps the mask cache stores, so
a member mask read from its own cache (the segment stage already made it) and one computed here
give the same ensemble mask, bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from maskreid.segment.base import Segmenter, build_segmenter, fingerprint_of
from maskreid.store.masks import MaskCache, prob_to_uint8
from maskreid.store.shards import CorruptImageError, decode_mask

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"


class EnsembleSegmenter(Segmenter):
    """Weighted mean of the members' probabilities (equal weights by default).

    ``cache_dir``: the mask cache the segment stages write; each member's cached masks are reused
    (looked up by image sha256 under the member's fingerprint), only misses are computed.
    """

    def __init__(self, members: list[Segmenter], weights: list[float] | None = None,
                 cache_dir: str | Path | None = None):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"ensemble weights {weights}: one non-negative weight per member, not all 0")
        self.members = members
        # the row columns any member reads (e.g. ground_truth's gt_mask), each once
        self.needs_columns = tuple(dict.fromkeys(c for m in members for c in m.needs_columns))
        self.weights = np.asarray(weights, np.float32) / np.float32(sum(weights))
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._cached: list[dict[str, bytes] | None] = [None] * len(members)
        self.name = "ensemble:" + "+".join(m.name for m in members)
        self._fp = fingerprint_of(ENSEMBLE, None, {"members": [m.fingerprint for m in members],
                                                   "weights": [round(float(w), 6) for w in self.weights]})

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _member_cache(self, i: int) -> dict[str, bytes]:
        if self._cached[i] is None:
            self._cached[i] = MaskCache(self.cache_dir, self.members[i].fingerprint).read() if self.cache_dir else {}
            log.info("ensemble member %s: %d masks in its cache", self.members[i].describe(), len(self._cached[i]))
        return self._cached[i]

    def _member_u8(self, i: int, images: list[np.ndarray], rows: list[dict]) -> list[np.ndarray]:
        cache = self._member_cache(i)
        out: list[np.ndarray | None] = [None] * len(images)
        todo = []
        for j, row in enumerate(rows):
            png = cache.get(row.get("sha256", ""))
            if png is None:
                todo.append(j)
                continue
            key = f"{self.members[i].describe()} cache {self.cache_dir}, image {row['sha256']}"
            u8 = decode_mask(png, key)  # unreadable: CorruptImageError naming the entry, not a silent redo
            if u8.shape != images[j].shape[:2]:
                raise CorruptImageError(f"mask {key!r}: {u8.shape[1]}x{u8.shape[0]} for a "
                                        f"{images[j].shape[1]}x{images[j].shape[0]} crop of the same bytes")
            out[j] = u8
        if todo:
            probs = self.members[i].predict_rows([images[j] for j in todo], [rows[j] for j in todo])
            for j, p in zip(todo, probs):
                out[j] = prob_to_uint8(p)
        return out  # type: ignore[return-value]

    def predict_rows(self, images: list[np.ndarray], rows: list[dict]) -> list[np.ndarray]:
        acc = [np.zeros(img.shape[:2], np.float32) for img in images]
        for i, w in enumerate(self.weights):
            for a, u8 in zip(acc, self._member_u8(i, images, rows)):
                a += w * (u8.astype(np.float32) / np.float32(255.0))
        return [np.clip(a, 0.0, 1.0) for a in acc]

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return self.predict_rows(batch, [{} for _ in batch])


def build_mask_source(cfg: dict, cache_dir: str | Path | None = None) -> Segmenter:
    """:func:`build_segmenter`, plus ``{"backend": "ensemble", "members": [cfg, ...], "weights"}``.

    The ensemble is built here rather than in the backend registry: it is made of registry
    backends, and it needs the stage's mask cache to reuse their masks.
    """
    if cfg.get("backend") != ENSEMBLE:
        return build_segmenter(cfg)
    unknown = sorted(set(cfg) - {"backend", "members", "weights"})
    if unknown:
        raise KeyError(f"ensemble segmenter config: keys {unknown} are not options (members, weights)")
    return EnsembleSegmenter([build_segmenter(m) for m in cfg["members"]], cfg.get("weights"), cache_dir)
