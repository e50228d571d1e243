"""Rank-list galleries: a few fixed queries with their top-k gallery matches, framed green
(same identity) or red (wrong), the way re-ID papers show them. Junk (pid -1) and the query's
own camera view of the same person are skipped, as the evaluation does."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from maskreid.store.shards import decode_image

GREEN, RED, BLUE = (40, 170, 60), (210, 40, 40), (60, 90, 220)


def _tile(img: np.ndarray, colour: tuple[int, int, int], h: int = 128, w: int = 64, border: int = 4) -> np.ndarray:
    tile = cv2.resize(img, (w - 2 * border, h - 2 * border), interpolation=cv2.INTER_AREA)
    return cv2.copyMakeBorder(tile, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)


def ranklist_figure(
    queries: pd.DataFrame,
    gallery: pd.DataFrame,
    q_feats: np.ndarray,
    g_feats: np.ndarray,
    out_path: str | Path,
    num_queries: int = 5,
    top: int = 10,
    seed: int = 0,
) -> Path:
    """``queries``/``gallery``: rows with image_id, pid, camid, image (bytes), in feature order."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), size=min(num_queries, len(queries)), replace=False))
    rows = []
    g_pid, g_cam = gallery.pid.to_numpy(), gallery.camid.to_numpy()
    for qi in pick:
        q = queries.iloc[qi]
        dist = np.linalg.norm(g_feats - q_feats[qi], axis=1)
        ignore = (g_pid == -1) | ((g_pid == q.pid) & (g_cam == q.camid))
        order = [j for j in np.argsort(dist, kind="stable") if not ignore[j]][:top]
        tiles = [_tile(decode_image(q.image, q.image_id), BLUE), np.full((128, 12, 3), 255, np.uint8)]
        for j in order:
            g = gallery.iloc[j]
            tiles.append(_tile(decode_image(g.image, g.image_id), GREEN if g.pid == q.pid else RED))
        while len(tiles) < top + 2:
            tiles.append(np.full((128, 64, 3), 255, np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {out_path}")
    tmp.replace(out_path)
    return out_path
