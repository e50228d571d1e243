"""Synthetic pedestrian crops: the embedded default dataset, built so that person masks matter.

Why it exists: users without the real archives (and the test suite) still need a dataset with
the shape of Market-1501 — identities, cameras, train/query/gallery, junk and distractors — and
one where, as in the MaskReID paper, the background is a real confound that a mask removes.

Design (everything is drawn from ``numpy.random.default_rng`` seeded by a tuple that names the
thing being drawn, so an image never depends on iteration order and the same seed gives the same
bytes):

* **Identity** (``seed, pid``): body shape (height, shoulder/hip width, head size, leg length),
  clothing (upper and lower colour from a shared palette of common garment colours plus jitter;
  upper texture plain / horizontal stripes / checks with a second colour; trousers, shorts or a
  skirt; long or short sleeves), skin and hair colour, hair length, shoes, and sometimes a
  backpack or handbag carried on one side (so a flip is a real viewpoint change).
* **Camera** (``seed, cam``): a background scene shared by every identity the camera sees — a
  wall/floor gradient, low-frequency texture, colour blobs, stripes or poles, and background
  objects painted in *clothing palette* colours (a red sign, a blue door, a torso-sized patch).
  Also the camera's illumination (gain and colour cast), sensor noise, blur and typical
  viewpoint (person scale and vertical placement).
* **Image** (``seed, pid, cam, role, k``): a small window shift inside the camera's scene, pose
  (stride, arm swing, front/back vs side view, lean), scale, horizontal shift, flip, illumination
  jitter, Gaussian noise; encoded as JPEG quality 90 like the real sets. ``gt_mask`` is the
  exact person silhouette (PNG 0/255) — carried bags count as person, as in human parsing.

Why masks matter here: every identity seen by a camera shares that camera's background, so a
full-crop descriptor ranks *same-camera* images of other people close (valid, wrong matches under
the Market rules), and clothing-coloured background objects put garment colours where no garment
is. Cross-camera illumination and viewpoint keep the foreground task imperfect. The tests measure
this with colour-histogram matchers (background-only < full crop < foreground-only).
Measured on a shared 2-core CPU: histogram rank-1 on ``iter_rows(60, 4, 2, seed=3)`` is 0.00
(background), 0.00 (full crop: same-camera strangers win), 0.74 (foreground); a 4-layer CNN
trained 12 epochs with softmax on the ``synthetic`` preset (150 train ids, 64x32 input) reaches
rank-1 0.875 on full crops and 0.897 on gt-masked crops (one seed each). Generation runs at
~1,200-1,400 crops per CPU-second (``render`` uses cv2 for drawing, LUT and compositing, and a
per-camera noise bank instead of fresh Gaussian noise per crop).

Layouts:

* ``market``: pids 1..N; the first half ``train``; each identity is seen by 2..num_cams cameras
  with ``images_per_id_per_cam`` images in each. Test identities get, per camera, one extra
  ``query`` image, the rest ``gallery``; each query has ``multiquery_per_query`` extra images of
  the same pid in the same camera (``multiquery``, like Market's gt_bbox). The gallery also
  holds distractors (pid 0: people not in the test set) and junk (pid -1: bad detections that
  are mostly background, person cut off) so the Market junk rules are exercised.
* ``single_shot``: like VIPeR — two cameras (camid 0/1), ``images_per_id_per_cam`` images of each
  identity in each, ``split`` = ``all``; :mod:`maskreid.splits` draws the train/test halves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from maskreid.store.shards import decode_image, decode_mask, encode_png, sha256_bytes

# Shared by clothing and background objects on purpose: the background can "wear" garment colours.
PALETTE = np.array(
    [
        (200, 30, 35),  # red
        (30, 60, 160),  # blue
        (25, 30, 70),  # navy
        (25, 25, 28),  # black
        (225, 225, 220),  # white
        (120, 120, 125),  # grey
        (40, 120, 50),  # green
        (225, 190, 40),  # yellow
        (110, 70, 40),  # brown
        (225, 120, 160),  # pink
        (110, 50, 130),  # purple
        (230, 120, 30),  # orange
        (200, 180, 140),  # beige
        (70, 100, 140),  # denim
        (150, 30, 50),  # maroon
        (60, 160, 170),  # teal
    ],
    dtype=np.float32,
)
# Trousers are mostly dark/neutral, as in street scenes.
_LOWER_WEIGHTS = np.array([1, 2, 3, 4, 1, 3, 1, 0.3, 2, 0.3, 0.3, 0.2, 2, 4, 0.5, 0.3])
SKIN = np.array([(235, 200, 170), (210, 165, 130), (170, 120, 85), (120, 80, 55), (90, 60, 40)], np.float32)
HAIR = np.array([(20, 15, 10), (60, 40, 25), (110, 80, 45), (190, 160, 100), (130, 130, 130)], np.float32)

# Part labels of the silhouette map (0 = background).
BG, UPPER, LOWER, SKIN_L, HAIR_L, SHOES, BAG, SLEEVE = range(8)

SPLIT_FOLDERS = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
    "multiquery": "gt_bbox",
}

SPEC = {
    "name": "synthetic",
    "layout": "market",
    "protocol": "market",
    "num_ids": 300,
    "num_cams": 6,
    "images_per_id_per_cam": 4,
    "seed": 0,
    "height": 128,
    "width": 64,
    "gt_mask": True,
    "note": "generated on the fly by maskreid.datasets.synthetic; needs no download",
}
PRESETS = {"synthetic": SPEC}

_BG_PAD = 10  # the camera scene is larger than a crop; each image sees a shifted window
_NOISE_PAD = 24


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


def _jitter_colour(rng: np.random.Generator, base: np.ndarray, sd: float) -> np.ndarray:
    return np.clip(base + rng.normal(0.0, sd, 3), 0, 255).astype(np.float32)


def _identity(seed: int, key: int) -> dict:
    """Appearance of one person (key: 1000+pid for dataset identities, else a distractor key)."""
    rng = _rng(seed, 1, key)
    ui = int(rng.integers(len(PALETTE)))
    li = int(rng.choice(len(PALETTE), p=_LOWER_WEIGHTS / _LOWER_WEIGHTS.sum()))
    ti = int((ui + rng.integers(1, len(PALETTE))) % len(PALETTE))
    tex = rng.choice(["plain", "stripes", "checks"], p=[0.5, 0.3, 0.2])
    return {
        "upper": _jitter_colour(rng, PALETTE[ui], 14),
        "lower": _jitter_colour(rng, PALETTE[li], 12),
        "tex": str(tex),
        "tex_colour": _jitter_colour(rng, PALETTE[ti], 14),
        "period": int(rng.integers(5, 10)),
        "thick": float(rng.uniform(0.3, 0.6)),
        "lower_kind": str(rng.choice(["trousers", "shorts", "skirt"], p=[0.7, 0.15, 0.15])),
        "long_sleeves": bool(rng.random() < 0.6),
        "skin": _jitter_colour(rng, SKIN[rng.integers(len(SKIN))], 6),
        "hair": _jitter_colour(rng, HAIR[rng.integers(len(HAIR))], 6),
        "long_hair": bool(rng.random() < 0.3),
        "shoes": _jitter_colour(rng, PALETTE[rng.choice([3, 4, 5, 8])], 10),
        "bag": str(rng.choice(["none", "backpack", "handbag"], p=[0.6, 0.2, 0.2])),
        "bag_colour": _jitter_colour(rng, PALETTE[rng.integers(len(PALETTE))], 12),
        "bag_side": int(rng.choice([-1, 1])),
        "height": float(rng.uniform(0.84, 0.96)),  # of the crop height
        "shoulder": float(rng.uniform(0.46, 0.58)),  # of the crop width, half-width x2
        "hip": float(rng.uniform(0.36, 0.44)),
        "head": float(rng.uniform(0.055, 0.066)),  # radius, of crop height
        "leg": float(rng.uniform(0.44, 0.50)),  # fraction of body height
    }


def _camera(seed: int, cam: int, height: int, width: int) -> dict:
    """One camera: its background scene (shared by all identities), illumination and viewpoint."""
    rng = _rng(seed, 0, cam)
    H, W = height + 2 * _BG_PAD, width + 2 * _BG_PAD
    wall = rng.uniform(60, 200, 3)
    floor = rng.uniform(50, 170, 3)
    horizon = int(H * rng.uniform(0.55, 0.8))
    t = np.linspace(0, 1, H, dtype=np.float32)[:, None, None]
    bg = np.where(
        np.arange(H)[:, None, None] < horizon,
        wall * (0.85 + 0.3 * t),
        floor * (1.1 - 0.3 * t),
    ) * np.ones((1, W, 1), np.float32)
    low = rng.normal(0, 18, (6, 4, 3)).astype(np.float32)  # low-frequency texture (dirt, light)
    bg += cv2.resize(low, (W, H), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 7))):  # colour blobs
        col = PALETTE[rng.integers(len(PALETTE))] if rng.random() < 0.5 else rng.uniform(0, 255, 3)
        c = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        axes = (int(rng.integers(4, 18)), int(rng.integers(4, 22)))
        cv2.ellipse(bg, c, axes, float(rng.uniform(0, 180)), 0, 360, tuple(float(v) for v in col), -1)
    if rng.random() < 0.6:  # stripes: railings, pavement lines or shop blinds
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        step = int(rng.integers(6, 14))
        if rng.random() < 0.5:
            for x in range(int(rng.integers(0, step)), W, step):
                cv2.line(bg, (x, 0), (x, horizon), col, 1 + int(rng.integers(0, 2)))
        else:
            for y in range(horizon, H, step // 2 + 2):
                cv2.line(bg, (0, y), (W, y), col, 1)
    for _ in range(int(rng.integers(1, 4))):  # background objects in garment colours
        col = tuple(float(v) for v in _jitter_colour(rng, PALETTE[rng.integers(len(PALETTE))], 10))
        w, h = int(rng.integers(8, 24)), int(rng.integers(14, 44))
        x0 = int(rng.choice([rng.integers(0, W // 3), rng.integers(2 * W // 3 - w // 2, W)]))
        y0 = int(rng.integers(H // 8, H - h))
        cv2.rectangle(bg, (x0, y0), (x0 + w, y0 + h), col, -1)
    if rng.random() < 0.5:  # a pole in the foreground plane
        x = int(rng.integers(0, W))
        cv2.rectangle(bg, (x, 0), (x + int(rng.integers(2, 5)), H), tuple(float(v) for v in rng.uniform(30, 200, 3)), -1)
    return {
        "bg": np.clip(bg, 0, 255).astype(np.float32),
        "gain": float(rng.uniform(0.7, 1.2)),
        "cast": rng.uniform(0.85, 1.15, 3).astype(np.float32),
        "noise": float(rng.uniform(2.0, 6.0)),
        "blur": float(rng.uniform(0.0, 0.9)),
        "scale": float(rng.uniform(0.88, 1.0)),
        "dy": float(rng.uniform(-3, 3)),
        "side_view": float(rng.uniform(0.1, 0.6)),  # probability of a side view in this camera
        # a bank of sensor noise; each image takes a random window of it (drawing fresh Gaussian
        # noise per crop was half the rendering time)
        "noise_bank": rng.standard_normal((height + 2 * _NOISE_PAD, width + 2 * _NOISE_PAD, 3), dtype=np.float32),
    }


_UNIT_CIRCLE = cv2.ellipse2Poly((0, 0), (1000, 1000), 0, 0, 360, 20).astype(np.float32) / 1000.0


def _ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return _UNIT_CIRCLE * np.float32([ax, ay]) + np.float32([cx, cy])


def _quad(x0: float, y0: float, x1: float, y1: float, w0: float, w1: float) -> np.ndarray:
    """A limb from (x0, y0) to (x1, y1), width w0 at the start and w1 at the end."""
    d = np.float32([x1 - x0, y1 - y0])
    n = np.float32([-d[1], d[0]]) / max(float(np.hypot(*d)), 1e-6)
    return np.float32(
        [
            (x0 + n[0] * w0 / 2, y0 + n[1] * w0 / 2),
            (x1 + n[0] * w1 / 2, y1 + n[1] * w1 / 2),
            (x1 - n[0] * w1 / 2, y1 - n[1] * w1 / 2),
            (x0 - n[0] * w0 / 2, y0 - n[1] * w0 / 2),
        ]
    )


def _silhouette(app: dict, rng: np.random.Generator, cam: dict, height: int, width: int, junk: bool) -> tuple[np.ndarray, float, float]:
    """Draw the person's part-label map (uint8 HxW); returns it with the body centre x and half-width."""
    H, W = height, width
    side = rng.random() < cam["side_view"]
    wf = 0.8 if side else 1.0  # a side view is narrower
    scale = cam["scale"] * rng.uniform(0.93, 1.05)
    if junk:  # a bad detection: person small or cut off, mostly background
        scale *= rng.uniform(0.5, 0.8)
    bh = app["height"] * H * scale
    cx = W / 2 + rng.normal(0, 2.5) + (rng.choice([-1, 1]) * rng.uniform(18, 30) if junk else 0)
    top = (H - bh) / 2 + cam["dy"] + rng.normal(0, 2) + (rng.uniform(-20, 30) if junk else 0)
    lean = rng.normal(0, 1.5)
    r_head = app["head"] * H * scale
    sh = app["shoulder"] * W * scale * wf / 2
    hp = app["hip"] * W * scale * wf / 2
    neck = top + 2 * r_head
    hip_y = top + bh * (1 - app["leg"])
    foot_y = top + bh
    stride = rng.uniform(0, 1) * (0.22 if side else 0.1) * bh
    swing = rng.uniform(-1, 1) * (0.12 if side else 0.05) * bh
    flip = rng.random() < 0.5

    polys: list[tuple[int, np.ndarray]] = []
    bag = app["bag"]
    if bag == "backpack":
        s = app["bag_side"] if side else 0
        polys.append((BAG, _ellipse(cx + lean + s * sh * 0.9, neck + 0.25 * bh * 0.5, sh * (0.8 if side else 1.05), 0.15 * bh)))
    # legs
    leg_w = max(hp * 1.0, 2.0)
    for sgn in (-1, 1):
        fx = cx + sgn * (stride / 2 + (0 if side else hp * 0.45))
        hx = cx + lean + sgn * hp * 0.45
        polys.append((LOWER, _quad(hx, hip_y, fx, foot_y - 2, leg_w, leg_w * 0.75)))
        if app["lower_kind"] == "shorts":
            knee = (hip_y + foot_y) / 2
            kx = (hx + fx) / 2
            polys.append((SKIN_L, _quad(kx, knee, fx, foot_y - 2, leg_w * 0.7, leg_w * 0.55)))
        polys.append((SHOES, _ellipse(fx + (2 if flip else -2) * side, foot_y - 1.5, leg_w * 0.6 + 1, 2.2)))
    if app["lower_kind"] == "skirt":
        polys.append((LOWER, np.float32([(cx + lean - hp, hip_y - 2), (cx + lean + hp, hip_y - 2),
                                         (cx + hp * 1.5, hip_y + 0.22 * bh), (cx - hp * 1.5, hip_y + 0.22 * bh)])))
    # torso
    polys.append((UPPER, np.float32([(cx + lean - sh, neck + 1), (cx + lean + sh, neck + 1),
                                     (cx + lean + hp * 1.05, hip_y + 3), (cx + lean - hp * 1.05, hip_y + 3)])))
    # arms
    arm_len = 0.36 * bh
    arm_w = max(sh * 0.42, 2.0)
    for sgn in (-1, 1):
        if side and sgn == -1:
            continue  # the far arm is hidden by the torso
        ax0 = cx + lean + (sh * 0.1 if side else sgn * (sh - arm_w / 2))
        ay0 = neck + 3
        ax1 = ax0 + sgn * swing + (0 if side else sgn * 2)
        ay1 = ay0 + arm_len
        if app["long_sleeves"]:
            polys.append((SLEEVE, _quad(ax0, ay0, ax1, ay1, arm_w, arm_w * 0.8)))
        else:
            mx, my = (ax0 + ax1) / 2, (ay0 + ay1) / 2
            polys.append((SKIN_L, _quad(mx, my, ax1, ay1, arm_w * 0.8, arm_w * 0.7)))
            polys.append((SLEEVE, _quad(ax0, ay0, mx, my + 1, arm_w, arm_w * 0.9)))
        polys.append((SKIN_L, _ellipse(ax1, ay1 + 1.5, arm_w * 0.45, 2.2)))
    if bag == "handbag":
        bx = cx + lean + app["bag_side"] * (sh + 2)
        polys.append((BAG, np.float32([(bx - 4, hip_y - 2), (bx + 4, hip_y - 2), (bx + 5, hip_y + 10), (bx - 5, hip_y + 10)])))
    # head and hair
    hx, hy = cx + lean * 1.3, top + r_head
    polys.append((SKIN_L, _ellipse(hx, hy, r_head * 0.85, r_head)))
    polys.append((SKIN_L, _quad(hx, hy + r_head * 0.6, hx, neck + 2, r_head * 0.7, r_head * 0.7)))
    hair_h = r_head * (2.6 if app["long_hair"] else 1.1)
    hair = _ellipse(hx, hy - r_head * 0.35 + (hair_h - r_head * 1.1) / 2, r_head * 0.95, hair_h / 2 + r_head * 0.35)
    polys.append((HAIR_L, hair))
    if not side:  # the face shows in front views; back views are hair only
        if rng.random() < 0.5:
            polys.append((SKIN_L, _ellipse(hx, hy + r_head * 0.2, r_head * 0.65, r_head * 0.7)))

    labels = np.zeros((H, W), np.uint8)
    for lab, pts in polys:
        if flip:
            pts = pts.copy()
            pts[:, 0] = W - 1 - pts[:, 0]
        cv2.fillPoly(labels, [np.round(pts * 16).astype(np.int32)], int(lab), lineType=cv2.LINE_8, shift=4)
    if flip:
        cx = W - 1 - cx
    return labels, cx, max(sh, hp, 1.0)


_TEX_CACHE: dict[tuple[str, int, float, int, int], np.ndarray] = {}


def _texture(kind: str, period: int, thick: float, height: int, width: int) -> np.ndarray:
    key = (kind, period, round(thick, 2), height, width)
    if key not in _TEX_CACHE:
        y = (np.arange(height)[:, None] % period) < thick * period
        if kind == "stripes":
            pat = np.broadcast_to(y, (height, width))
        elif kind == "checks":
            x = (np.arange(width)[None, :] % period) < thick * period
            pat = y ^ x
        else:
            pat = np.zeros((height, width), bool)
        _TEX_CACHE[key] = np.ascontiguousarray(pat)
    return _TEX_CACHE[key]


def render(app: dict, cam: dict, rng: np.random.Generator, height: int = 128, width: int = 64,
           junk: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Render one crop: RGB uint8 HxWx3 and the person mask uint8 HxW (0/255)."""
    labels, cx, half_w = _silhouette(app, rng, cam, height, width, junk)
    lut = np.zeros((256, 1, 3), np.float32)  # cv2.LUT: ~3x faster than numpy fancy indexing
    lut[UPPER, 0], lut[LOWER, 0], lut[SKIN_L, 0], lut[HAIR_L, 0] = app["upper"], app["lower"], app["skin"], app["hair"]
    lut[SHOES, 0], lut[BAG, 0], lut[SLEEVE, 0] = app["shoes"], app["bag_colour"], app["upper"]
    person = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    if app["tex"] != "plain":
        pat = _texture(app["tex"], app["period"], app["thick"], height, width)
        person[(labels == UPPER) & pat] = app["tex_colour"]
    # cylindrical shading across the body, so the person is not a flat cut-out
    xs = (np.arange(width, dtype=np.float32) - np.float32(cx)) / np.float32(half_w * 1.6)
    person *= (1.0 - 0.3 * np.clip(xs * xs, 0, 1))[None, :, None]

    oy, ox = rng.integers(0, 2 * _BG_PAD + 1, 2)
    img = cam["bg"][oy : oy + height, ox : ox + width].copy()
    fg = (labels > 0).view(np.uint8)
    cv2.copyTo(person, fg, img)
    img *= cam["cast"] * np.float32(cam["gain"] * rng.uniform(0.93, 1.07))
    if cam["blur"] > 0.3:
        img = cv2.GaussianBlur(img, (3, 3), cam["blur"])
    ny, nx = rng.integers(0, 2 * _NOISE_PAD + 1, 2)
    img += cam["noise_bank"][ny : ny + height, nx : nx + width] * np.float32(cam["noise"])
    return np.clip(img, 0, 255).astype(np.uint8), fg * np.uint8(255)


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _plan_market(num_ids: int, num_cams: int, ipc: int, seed: int, mq: int, n_distr: int, n_junk: int) -> Iterator[tuple]:
    """Yield (split, pid, cam, k, appearance_key, junk) for the Market-style layout."""
    n_train = num_ids // 2
    for pid in range(1, num_ids + 1):
        rng = _rng(seed, 2, pid)
        n_c = int(rng.integers(2, num_cams + 1))
        cams = np.sort(rng.choice(num_cams, n_c, replace=False))
        for cam in cams:
            cam = int(cam)
            if pid <= n_train:
                for k in range(ipc):
                    yield "train", pid, cam, k, 1000 + pid, False
                continue
            for k in range(ipc):
                yield "gallery", pid, cam, k, 1000 + pid, False
            yield "query", pid, cam, ipc, 1000 + pid, False
            for k in range(mq):
                yield "multiquery", pid, cam, ipc + 1 + k, 1000 + pid, False
    rng = _rng(seed, 4)
    for k in range(n_distr):  # distractors: other people, never in the query set
        yield "gallery", 0, int(rng.integers(num_cams)), k, 10_000_000 + k, False
    for k in range(n_junk):  # junk: bad detections of random people
        yield "gallery", -1, int(rng.integers(num_cams)), k, 20_000_000 + k, True


def iter_rows(
    num_ids: int,
    num_cams: int,
    images_per_id_per_cam: int,
    seed: int,
    height: int = 128,
    width: int = 64,
    name: str = "synthetic",
    layout: str = "market",
    multiquery_per_query: int = 2,
    num_distractors: int | None = None,
    num_junk: int | None = None,
    jpeg_quality: int = 90,
) -> Iterator[dict]:
    """Yield IMAGE_SCHEMA rows (dicts) of the synthetic set; same arguments -> identical bytes.

    ``num_distractors``/``num_junk`` default to ``max(2, num_ids // 10)`` each (market layout)."""
    if seed < 0:
        raise ValueError(f"synthetic {name!r}: seed must be >= 0 (got {seed})")
    if num_ids < 2 or num_cams < 2 or images_per_id_per_cam < 1:
        raise ValueError(
            f"synthetic {name!r}: need num_ids >= 2, num_cams >= 2, images_per_id_per_cam >= 1 "
            f"(got {num_ids}, {num_cams}, {images_per_id_per_cam})"
        )
    if layout == "market":
        n_d = max(2, num_ids // 10) if num_distractors is None else num_distractors
        n_j = max(2, num_ids // 10) if num_junk is None else num_junk
        plan = _plan_market(num_ids, num_cams, images_per_id_per_cam, seed, multiquery_per_query, n_d, n_j)
    elif layout == "single_shot":
        if num_cams != 2:
            raise ValueError(f"synthetic {name!r}: layout 'single_shot' has exactly 2 cameras (got num_cams={num_cams})")
        plan = (("all", pid, cam, k, 1000 + pid, False)
                for pid in range(1, num_ids + 1) for cam in (0, 1) for k in range(images_per_id_per_cam))
    else:
        raise ValueError(f"synthetic {name!r}: unknown layout {layout!r} (expected 'market' or 'single_shot')")

    cams: dict[int, dict] = {}
    apps: dict[int, dict] = {}
    for split, pid, cam, k, akey, junk in plan:
        if cam not in cams:
            cams[cam] = _camera(seed, cam, height, width)
        if akey not in apps:
            if len(apps) > 4096:
                apps.clear()
            apps[akey] = _identity(seed, akey)
        rng = _rng(seed, 3, akey, cam, k)
        rgb, mask = render(apps[akey], cams[cam], rng, height, width, junk)
        data = encode_jpeg(rgb, jpeg_quality)
        if layout == "market":
            path = f"{SPLIT_FOLDERS[split]}/{pid:04d}_c{cam + 1}_{k:03d}.jpg"
        else:
            path = f"cam_{'ab'[cam]}/{pid:04d}_{k:03d}.jpg"
        yield {
            "image_id": f"{name}/{path}",
            "dataset": name,
            "pid": pid,
            "camid": cam,
            "split": split,
            "image": data,
            "sha256": sha256_bytes(data),
            "width": width,
            "height": height,
            "gt_mask": encode_png(mask),
        }


def iter_preset(preset: str = "synthetic", **overrides) -> Iterator[dict]:
    """Rows of a named preset (``synthetic``: what ``get_dataset("synthetic")`` generates), with
    keyword overrides. The pipeline's generated sets are params (``datasets.<name>.generate``)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown synthetic preset {preset!r}; known: {sorted(PRESETS)}")
    spec = {**PRESETS[preset], **overrides}
    keys = ("num_ids", "num_cams", "images_per_id_per_cam", "seed", "height", "width", "name", "layout")
    return iter_rows(**{k: spec[k] for k in keys})


def contact_sheet(rows: Iterable[dict], out_path: str | Path, max_images: int = 48, ncols: int = 12,
                  with_masks: bool = True) -> Path:
    """Write a PNG grid of crops (each followed by its gt mask overlay) for eyeballing."""
    tiles = []
    for row in rows:
        if len(tiles) >= max_images:
            break
        img = decode_image(row["image"], row["image_id"])
        if with_masks and row.get("gt_mask") is not None:
            m = decode_mask(row["gt_mask"], row["image_id"]) > 127
            over = img.copy()
            over[~m] = (over[~m] * 0.25).astype(np.uint8)
            img = np.concatenate([img, over], axis=1)
        img = cv2.copyMakeBorder(img, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        cv2.putText(img, f"{row['pid']}c{row['camid']}", (3, 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 0), 1)
        tiles.append(img)
    if not tiles:
        raise ValueError("contact_sheet: no rows given")
    h, w = tiles[0].shape[:2]
    nrows = -(-len(tiles) // ncols)
    sheet = np.full((nrows * h, min(ncols, len(tiles)) * w, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {tmp}")
    tmp.replace(out_path)
    return out_path
