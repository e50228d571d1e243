"""Part-label option: the dataset yields the 20 classes and the person logit is P(fg) vs P(bg)."""

import numpy as np
import torch

from maskreid.segment.parsing_data import ParsingDataset, ParsingPairs
from maskreid.segment.seg_model import PersonLogit
from maskreid.segment.trainer import IMAGENET_MEAN, IMAGENET_STD


class _Const(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def _box_dataset(size, rows, cols, label, part_labels=False):
    """One training crop of ``size`` (H, W): black, with a white box at ``rows``×``cols`` labelled ``label``."""
    img = np.zeros((1, *size, 3), np.uint8)
    lab = np.zeros((1, *size), np.uint8)
    img[0, rows, cols] = 255
    lab[0, rows, cols] = label
    return ParsingDataset(ParsingPairs(["0001_x.jpg"], np.array([1]), img, lab), size, True, IMAGENET_MEAN, IMAGENET_STD,
                          part_labels=part_labels)


def test_person_logit_from_part_scores():
    out = torch.full((1, 20, 1, 2), -1e4)
    out[0, 0, 0, 0], out[0, 3, 0, 0], out[0, 5, 0, 0] = 0.0, 0.0, 0.0  # pixel 0: p(bg)=1/3, p(fg)=2/3
    out[0, 0, 0, 1] = 5.0  # pixel 1: background only
    logit = PersonLogit(_Const(out), 20)(torch.zeros(1))
    assert logit.shape == (1, 1, 1, 2)
    np.testing.assert_allclose(torch.sigmoid(logit).flatten().numpy(), [2 / 3, 0.0], atol=1e-6)
    single = torch.randn(2, 1, 3, 3)
    assert torch.equal(PersonLogit(_Const(single), 1)(torch.zeros(1)), single)


def test_dataset_targets_binary_and_parts():
    lab = np.zeros((1, 8, 4), np.uint8)
    lab[0, 2:6, 1:3] = 7
    pairs = ParsingPairs(["0001_c1s1_000001_01.jpg"], np.array([1]), np.full((1, 8, 4, 3), 128, np.uint8), lab)
    x, y = ParsingDataset(pairs, (8, 4), False, IMAGENET_MEAN, IMAGENET_STD)[0]
    assert x.shape == (3, 8, 4) and y.shape == (1, 8, 4) and y.dtype == torch.float32
    assert torch.equal(y[0], torch.from_numpy(lab[0] > 0).float())
    np.testing.assert_allclose(x[:, 0, 0].numpy(), (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD), rtol=1e-5)
    _, yp = ParsingDataset(pairs, (8, 4), False, IMAGENET_MEAN, IMAGENET_STD, part_labels=True)[0]
    assert yp.dtype == torch.int64 and torch.equal(yp, torch.from_numpy(lab[0]).long())
    # training augmentation moves the mask with the image (flip/crop): mask stays binary and aligned in size
    xt, yt = ParsingDataset(pairs, (8, 4), True, IMAGENET_MEAN, IMAGENET_STD)[0]
    assert xt.shape == (3, 8, 4) and yt.shape == (1, 8, 4) and 0.0 <= float(yt.min()) <= float(yt.max()) <= 1.0


def test_augmentation_moves_the_mask_with_the_image():
    # an off-centre white "person" on black: if flips/crops missed the mask, mask pixels would be dark
    ds = _box_dataset((32, 16), slice(4, 28), slice(1, 7), 3)
    torch.manual_seed(0)
    right_side = 0
    for _ in range(20):
        x, y = ds[0]
        m = y[0] > 0
        assert m.any() and (~m).any()
        assert x[:, m].mean() > x[:, ~m].mean() + 1.0
        right_side += int(m[:, 8:].sum() > m[:, :8].sum())
    assert 0 < right_side < 20  # flips happened, and not always


def test_flip_swaps_left_and_right_part_labels():
    from maskreid.segment.parsing_data import flip_parts

    img = torch.arange(2 * 1 * 4, dtype=torch.uint8).view(2, 1, 4)
    lab = torch.tensor([[14, 5, 16, 19]], dtype=torch.uint8)  # left arm, upper clothes, left leg, right shoe
    fimg, flab = flip_parts(img, lab)
    assert torch.equal(fimg, img.flip(-1))
    assert flab.tolist() == [[18, 17, 5, 15]] and flab.dtype == torch.uint8
    assert torch.equal(flip_parts(fimg, flab)[1], lab)  # flipping twice gives the original labels back


def test_training_flips_move_left_arm_labels_to_the_right_arm():
    # a "left arm" on the image's left edge: after a flip it is on the right edge and labelled right arm
    ds = _box_dataset((32, 16), slice(6, 26), slice(0, 3), 14, part_labels=True)
    torch.manual_seed(0)
    seen = set()
    cols = torch.arange(16).float()
    for _ in range(20):
        _, y = ds[0]
        present = set(torch.unique(y).tolist()) - {0}
        if not present:
            continue  # the scale jitter cropped the arm away
        assert len(present) == 1, present  # never both labels: the flip relabels, it does not mix
        cls = present.pop()
        mean_col = float(cols.expand(32, 16)[y == cls].mean())
        assert (cls == 14 and mean_col < 8) or (cls == 15 and mean_col > 8), (cls, mean_col)
        seen.add(cls)
    assert seen == {14, 15}


def _centroid(w: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.meshgrid(torch.arange(w.shape[0]).float(), torch.arange(w.shape[1]).float(), indexing="ij")
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


def test_training_target_stays_aligned_with_the_image_to_a_fraction_of_a_pixel():
    # the person is exactly the bright pixels: after the scale jitter, target and image brightness
    # must have the same centroid. A nearest-neighbour mask resize puts the target ~0.4 px off.
    ds = _box_dataset((128, 64), slice(30, 101), slice(17, 40), 5)
    torch.manual_seed(0)
    worst = 0.0
    for _ in range(30):
        x, y = ds[0]
        bright = x.mean(0)
        bright = bright - bright.min()
        (ix, iy), (tx, ty) = _centroid(bright), _centroid(y[0])
        worst = max(worst, abs(ix - tx), abs(iy - ty))
    assert worst < 0.1, worst


def test_strong_geometry_moves_image_and_target_together():
    # the same map given as image and as target must come out identical: one shared crop
    from torchvision import tv_tensors

    from maskreid.segment.parsing_data import build_transform

    t = build_transform((128, 64), True, "strong")
    mild_scale = build_transform((128, 64), True, "mild").transforms[0].scale
    assert t.transforms[0].scale[0] < mild_scale[0]  # wider framing than the Market-chosen recipe
    torch.manual_seed(0)
    for _ in range(10):
        m = torch.rand(1, 128, 64)
        a, b = t(tv_tensors.Image(m), tv_tensors.Image(m.clone()))
        assert torch.equal(a, b)


def test_strong_photometric_changes_the_image_only_in_value():
    from maskreid.segment.parsing_data import build_photometric

    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 128, 64), dtype=np.uint8))
    torch.manual_seed(0)
    outs = [build_photometric(True, "strong")(img) for _ in range(40)]
    assert all(o.shape == (3, 128, 64) and o.dtype == torch.float32 and 0 <= o.min() <= o.max() <= 1 for o in outs)
    grey = sum(bool(torch.equal(o[0], o[1]) and torch.equal(o[1], o[2])) for o in outs)
    assert 0 < grey < 40  # some crops are turned grey, not all
    # blur, low resolution or JPEG smooth the noise in some crops: neighbouring pixels grow alike
    rough = [float((o[:, :, 1:] - o[:, :, :-1]).abs().mean()) for o in outs]
    assert min(rough) < 0.5 * max(rough)
    torch.testing.assert_close(build_photometric(False, "strong")(img), img.float() / 255)


def test_unknown_augmentation_is_refused():
    import pytest

    from maskreid.segment.parsing_data import build_transform

    with pytest.raises(ValueError, match="augment must be one of"):
        build_transform((128, 64), True, "heavy")
