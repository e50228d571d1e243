"""The DGD inception trunk (Xiao et al., CVPR 2016), layer for layer.

Source of every number here: the authors' Caffe definition
``models/dgd/jstl_trainval.prototxt`` in github.com/Cysu/dgd_person_reid (commit 7f99eb4):

* input crop 144 x 56 (``crop_height: 144 crop_width: 56``);
* conv1..conv3: 3x3, stride 1, pad 1, 32 channels, each followed by BN and ReLU; then
  ``pool1`` max 2x2 stride 2  ->  32 x 72 x 28;
* inception_1a/1b, 2a/2b, 3a/3b of the prototxt are the paper's 4a/4b (low), 5a/5b (middle) and
  6a/6b (high) levels. An "a" module has four branches of ``w`` channels each (1x1; 1x1 -> 3x3;
  1x1 -> 3x3 -> 3x3; avg-pool 3x3 s1 p1 -> 1x1), w = 64, 128, 256. A "b" module halves the
  resolution with three branches (1x1 -> 3x3 s2; 1x1 -> 3x3 -> 3x3 s2; max-pool 3x3 s2 of the
  input passed through unchanged), so its output has 2w + C_in channels;
* shapes at 144 x 56: level 4 -> 384 x 36 x 14, level 5 -> 768 x 18 x 7, level 6 -> 1536 x 9 x 4,
  then global average pooling (the prototxt's 9x4 AVE pool) and fc7 (256) + BN + ReLU.

One deliberate deviation: the prototxt's stride-2 max-pool branches use pad 0 with Caffe's
round-up (and ``pad_w: 1`` in 3b) so that their sizes match the stride-2 convs at 144 x 56 only;
at other input sizes they disagree by one and the concatenation fails. Here they use pad 1 with
round-down, which gives exactly the prototxt's output sizes at 144 x 56 (windows shifted by one
pixel) and matches the convs (ceil(H/2)) at any input size. Every convolution is followed by
BatchNorm and ReLU (the prototxt's "BN" layers; the conv bias is dropped as BN's shift replaces it).
"""

from __future__ import annotations

import torch
from torch import nn

DGD_INPUT_SIZE = (144, 56)  # (H, W) from the DGD prototxt's crop_height / crop_width
STEM_CHANNELS = 32
LEVEL_WIDTHS = {"level4": 64, "level5": 128, "level6": 256}


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0) -> nn.Sequential:
    """Conv -> BN -> ReLU; the conv has no bias because BN's shift replaces it."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (1.0 = the published DGD widths)."""
    return max(8, int(round(channels * width)))


def dgd_stem(in_channels: int = 3, width: float = 1.0) -> nn.Sequential:
    """conv1-3 (3x3, 32 channels, BN, ReLU) and pool1 (max 2x2 s2): one per input stream."""
    c = scaled(STEM_CHANNELS, width)
    return nn.Sequential(
        conv_bn(in_channels, c, 3, pad=1),
        conv_bn(c, c, 3, pad=1),
        conv_bn(c, c, 3, pad=1),
        nn.MaxPool2d(2, stride=2),
    )


class InceptionA(nn.Module):
    """Resolution-keeping module: four branches of ``w`` channels, concatenated (4w out)."""

    def __init__(self, c_in: int, w: int):
        super().__init__()
        self.b1x1 = conv_bn(c_in, w, 1)
        self.b3x3 = nn.Sequential(conv_bn(c_in, w, 1), conv_bn(w, w, 3, pad=1))
        self.b3x3dbl = nn.Sequential(
            conv_bn(c_in, w, 1), conv_bn(w, w, 3, pad=1), conv_bn(w, w, 3, pad=1)
        )
        self.bpool = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True), conv_bn(c_in, w, 1)
        )
        self.out_channels = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1x1(x), self.b3x3(x), self.b3x3dbl(x), self.bpool(x)], 1)


class InceptionB(nn.Module):
    """Stride-2 module: two conv branches of ``w`` channels plus the max-pooled input."""

    def __init__(self, c_in: int, w: int):
        super().__init__()
        self.b3x3 = nn.Sequential(conv_bn(c_in, w, 1), conv_bn(w, w, 3, stride=2, pad=1))
        self.b3x3dbl = nn.Sequential(
            conv_bn(c_in, w, 1), conv_bn(w, w, 3, pad=1), conv_bn(w, w, 3, stride=2, pad=1)
        )
        # pad 1: same output size as the stride-2 convs, ceil(H/2) x ceil(W/2), at any input size
        self.bpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = 2 * w + c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3x3(x), self.b3x3dbl(x), self.bpool(x)], 1)


def dgd_levels(c_in: int, width: float = 1.0) -> tuple[nn.ModuleDict, dict[str, int]]:
    """The shared levels 4 (low), 5 (middle), 6 (high); returns them and their out channels.
    ``width`` scales every branch (the demo and CPU runs use a slimmer trunk; 1.0 = the paper)."""
    levels = nn.ModuleDict()
    channels: dict[str, int] = {}
    c = c_in
    for name, w in LEVEL_WIDTHS.items():
        w = scaled(w, width)
        a = InceptionA(c, w)
        b = InceptionB(a.out_channels, w)
        levels[name] = nn.Sequential(a, b)
        c = b.out_channels
        channels[name] = c
    return levels, channels
