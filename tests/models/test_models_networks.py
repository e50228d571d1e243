"""Shapes, stream handling, fusion and pretrained-weight handling of the re-ID networks."""

import pytest
import torch

from maskreid.models import ARCHS, DGD_INPUT_SIZE, ModelOutput, build_model, resnet50_cache_file

torch.set_num_threads(1)


def x_of(b=2, size=DGD_INPUT_SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, *size, generator=g)


def test_dgd_level_shapes_match_prototxt():
    # DGD prototxt at 144x56: inception_1b 384x36x14, 2b 768x18x7, 3b 1536x9x4 (global pool 9x4)
    m = build_model("maskreid_mf").eval()
    x = x_of()
    with torch.no_grad():
        stem = m.stem([x, x])
        assert stem.shape == (2, 64, 72, 28)  # two 32-channel stems after pool1
        shapes = [tuple(t.shape[1:]) for t in m.level_outputs(stem)]
    assert shapes == [(384, 36, 14), (768, 18, 7), (1536, 9, 4)]


@pytest.mark.parametrize("size", [(72, 28), (65, 33), (128, 64)])
def test_inception_other_input_sizes(size):
    m = build_model("maskreid_mf").eval()
    with torch.no_grad():
        assert m(x_of(size=size), x_of(size=size)).feat.shape == (2, 256)


@pytest.mark.parametrize("arch", ["dgd", "maskreid_m", "maskreid_mf"])
def test_inception_forward(arch):
    m = build_model(arch, num_classes=7)
    assert m.num_streams == (1 if arch == "dgd" else 2)
    x = x_of()
    out = m(x) if arch == "dgd" else m(x, x_of(seed=1))
    assert isinstance(out, ModelOutput)
    assert out.feat.shape == (2, 256) and out.logits.shape == (2, 7)
    out2 = build_model(arch)(x) if arch == "dgd" else build_model(arch)(x, x)
    assert out2.logits is None


def test_missing_or_extra_masked_input_is_a_clear_error():
    m = build_model("maskreid_m")
    with pytest.raises(ValueError, match="masked"):
        m(x_of())
    with pytest.raises(ValueError, match="1 input stream"):
        build_model("dgd")(x_of(), x_of())
    with pytest.raises(ValueError, match="shape"):
        m(x_of(), x_of(size=(128, 64)))


def test_masked_stream_changes_the_embedding():
    m = build_model("maskreid_mf").eval()
    x = x_of()
    with torch.no_grad():
        a = m(x, x).feat
        b = m(x, torch.zeros_like(x)).feat
    assert not torch.allclose(a, b)


def test_three_streams_and_fusion_skip_path():
    m = build_model("maskreid_mf", streams=("orig", "masked", "parts"))
    assert m.num_streams == 3
    out = m(x_of(), x_of(seed=1), x_of(seed=2))
    out.feat.sum().backward()
    # the skipped fusing layer feeds the low level straight into the embedding
    assert m.proj["level4"][0].weight.grad.abs().sum() > 0
    assert all(s[0][0].weight.grad is not None for s in m.stems)
    with pytest.raises(ValueError, match="3 input stream"):
        m(x_of(), x_of(seed=1))


def test_fusion_adds_parameters_and_dgd_is_single_stream():
    n = {a: sum(p.numel() for p in build_model(a).parameters()) for a in ARCHS[:3]}
    assert n["dgd"] < n["maskreid_m"] < n["maskreid_mf"]
    assert build_model("dgd", streams=("orig", "masked")).num_streams == 1


@pytest.mark.parametrize("arch", ["resnet50_m", "resnet50_mf"])
def test_resnet_forward(arch):
    m = build_model(arch, num_classes=5)
    out = m(x_of(size=(64, 32)), x_of(size=(64, 32), seed=1))
    assert out.feat.shape == (2, 256) and out.logits.shape == (2, 5)


def test_unknown_arch_and_dgd_pretrained():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg")
    with pytest.raises(ValueError, match="pretrained"):
        build_model("maskreid_mf", pretrained=True)


def test_resnet_pretrained_missing_names_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert resnet50_cache_file() == str(expected)
    with pytest.raises(FileNotFoundError, match="resnet50-11ad3fa6.pth"):
        build_model("resnet50_mf", pretrained=True)


def test_resnet_pretrained_loads_from_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet50

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(123)
    ref = resnet50(weights=None)
    path = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    m = build_model("resnet50_m", pretrained=True)
    for stem in m.stems:
        assert torch.equal(stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.layer4[0].conv1.weight, ref.layer4[0].conv1.weight)
    # the merge conv starts as the mean of the two streams
    w = m.merge[0].weight[:, :, 0, 0]
    assert torch.equal(w[:, :256], torch.eye(256) / 2) and torch.equal(w[:, 256:], torch.eye(256) / 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_forward_backward():
    from maskreid.losses import RankingLoss

    m = build_model("maskreid_mf", num_classes=4).cuda()
    x = x_of(b=8).cuda()
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 3, 1], device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        out = m(x, x.flip(3))
        loss = RankingLoss()(out.feat, labels)
    loss.backward()
    assert torch.isfinite(loss) and m.stems[0][0][0].weight.grad is not None


def test_width_multiplier_slims_the_dgd_trunk_only():
    import torch as _t

    from maskreid.models import build_model as _build

    full = _build("maskreid_mf", num_classes=5)
    slim = _build("maskreid_mf", num_classes=5, width=0.25)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(slim) < n(full) / 8
    out = slim(_t.randn(2, 3, 72, 28), _t.randn(2, 3, 72, 28))
    assert out.feat.shape == (2, 256) and out.logits.shape == (2, 5)
    with pytest.raises(ValueError, match="width"):
        _build("resnet50_mf", width=0.5)


@pytest.mark.parametrize("arch", ["maskreid_m", "maskreid_mf", "mnv2_m", "mnv2_mf"])
def test_each_stream_gets_its_own_input(arch):
    """The original crop enters the first stream's layers and the masked crop the second's: a
    forward that swapped them would still change the embedding, so check the inputs themselves."""
    torch.manual_seed(0)
    kw = {"width": 0.25} if arch.startswith("maskreid") else {}
    model = build_model(arch, **kw).eval()
    seen = {}
    def recorder(i):
        def hook(module, inputs, output):  # returns None: the output is left as it is
            seen[i] = inputs[0]
        return hook

    for i, stem in enumerate(model.stems):
        stem.register_forward_hook(recorder(i))
    h, w = (144, 56) if arch.startswith("maskreid") else (128, 64)
    x, masked = torch.rand(2, 3, h, w), torch.zeros(2, 3, h, w)
    with torch.no_grad():
        model(x, masked)
    assert len(model.streams) == 2
    assert torch.equal(seen[0], x) and torch.equal(seen[1], masked)
