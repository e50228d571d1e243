"""The frozen trunk prefix computed once per training image, then augmented as feature maps.

Why: with ``model.frozen_blocks`` N the first N MobileNetV2 modules never change, yet every step
recomputes them at the crop's full resolution. On the 2-core CPU that forward is about a third of
a fine-tuning step (160 x 80, N = 4, batch 64: 171 of 486 ms). Computing it once per stage for
each crop, and its mirror image, leaves the cores to the modules that learn.

What changes against ``ArrayDataset``'s augmentation (so a run that sets ``data.cached_prefix`` is a
different recipe, to be compared at equal time on a validation split, not a faster copy):

- Flip: exact (both orientations are cached).
- Pad-crop: the padded crop's features are cached and a window of the unpadded crop's feature size
  is cut at a random offset, so the shifts come in steps of the prefix's stride (4 pixels at N = 4)
  instead of 1, and cells at the window's border see their true neighbours where a pixel crop
  would see zero padding.
- Random erasing: the same draw (2-40 % of the area, aspect 0.3-3.3), in feature cells, filled
  with the prefix's response inside a mean-coloured image: what an erased patch's interior
  becomes, without the blending at its border.
- Batch norm in the frozen modules uses their running statistics (eval mode) instead of each
  batch's, and those statistics stay the start model's: training and test features of the
  prefix are then the same function.
"""

from __future__ import annotations

import torch
from torch import nn

from maskreid.models.networks import ModelOutput
from maskreid.train.arrays import ArrayDataset, batch_generator, batch_rows, erase_boxes


class FromPrefix(nn.Module):
    """The network seen from the cached prefix: ``forward(h)`` runs the trained modules and the head.

    It has one input stream (the cached features), so the training loop passes no masked image.
    """

    num_streams = 1

    def __init__(self, net: nn.Module):
        super().__init__()
        net.check_cacheable_prefix()
        self.net = net

    def forward(self, h: torch.Tensor, masked: torch.Tensor | None = None) -> ModelOutput:
        return self.net.forward_from_prefix(h)


class PrefixFeatureDataset:
    """``dataset[batch]`` -> ``(h, empty, labels)``: the prefix's features of a whole batch, augmented.

    Built from an ``ArrayDataset`` (its decoded crops, masks, pad and erase_p) and the model whose
    frozen prefix it caches, as float16 ``[N, 2 (as is, mirrored), C, Hp, Wp]``: about 108 KB an
    image at 160 x 80, pad 10, N = 4 (1.4 GB for Market's 12,936 training crops). Seeded per batch
    as ``ArrayDataset`` is, so a run is reproducible and resumes exactly.
    """

    batched = True

    def __init__(self, arrays: ArrayDataset, net: nn.Module, chunk: int = 128):
        net.check_cacheable_prefix()
        if not arrays.train:
            raise ValueError("PrefixFeatureDataset augments training batches: pass an ArrayDataset with train=True")
        if net.num_streams > 1 and arrays.m is None:
            raise ValueError(f"{net.arch} takes the masked image: the ArrayDataset has no masks")
        # only what batches need is kept: the decoded crops are freed once their features are cached
        self.labels, self.erase_p = arrays.labels, arrays.erase_p
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                (h, w), p = arrays.size, arrays.pad
                probe = net.prefix(*[torch.zeros(1, 3, h, w)] * net.num_streams)
                self.crop = tuple(probe.shape[-2:])
                # an erased (mean-coloured) patch's interior
                self.fill = probe[0, :, self.crop[0] // 2, self.crop[1] // 2].view(1, -1, 1, 1)
                padded = net.prefix(*[torch.zeros(1, 3, h + 2 * p, w + 2 * p)] * net.num_streams)
                self.padded = tuple(padded.shape[-2:])
                self.feats = torch.empty((len(arrays), 2, padded.shape[1], *self.padded), dtype=torch.float16)
                for lo in range(0, len(arrays), chunk):
                    hi = min(lo + chunk, len(arrays))
                    self.feats[lo:hi] = _mirrored_prefix(net, arrays, lo, hi)
        finally:
            net.train(was_training)

    def __len__(self) -> int:
        return len(self.feats)

    def __getitem__(self, batch):
        idx, seed = batch_rows(batch)
        g = batch_generator(seed)
        n = len(idx)
        flip = (torch.rand(n, generator=g) < 0.5).long()
        (ch, cw), (ph, pw) = self.crop, self.padded
        dy = torch.randint(0, ph - ch + 1, (n,), generator=g).tolist()
        dx = torch.randint(0, pw - cw + 1, (n,), generator=g).tolist()
        f = self.feats[idx, flip]
        h = torch.stack([f[i, :, y:y + ch, x:x + cw] for i, (y, x) in enumerate(zip(dy, dx))]).float()
        if self.erase_p > 0:
            h = self._erase(h, g)
        return h, torch.empty(0), self.labels[idx]

    def _erase(self, h: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``ArrayDataset``'s erasing draw in feature cells, filled with a mean-coloured patch's features."""
        n, _, ch, cw = h.shape
        for i, y0, eh, x0, ew in erase_boxes(n, ch, cw, self.erase_p, g):
            h[i, :, y0:y0 + eh, x0:x0 + ew] = self.fill[0]
        return h


def _mirrored_prefix(net: nn.Module, arrays: ArrayDataset, lo: int, hi: int) -> torch.Tensor:
    """Crops lo..hi-1, zero-padded (black, as ``ArrayDataset`` pads), as is and mirrored -> float16
    ``[hi - lo, 2, C, Hp, Wp]`` prefix features."""
    p = arrays.pad
    x = nn.functional.pad(arrays.x[lo:hi].float().div_(255.0), (p, p, p, p))
    m = nn.functional.pad(arrays.m[lo:hi].float().div_(255.0), (p, p, p, p)) if net.num_streams > 1 else None
    x, masked = arrays.model_inputs(x, m)
    masked = () if masked is None else (masked,)
    both = [net.prefix(x, *masked), net.prefix(x.flip(-1), *(t.flip(-1) for t in masked))]
    return torch.stack(both, 1).to(torch.float16)
