import numpy as np
import pytest
import torch

from maskreid.models import build_model
from maskreid.train import export_onnx, load_model


def test_onnx_export_gives_the_same_features(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("maskreid_mf", num_classes=7, width=0.25).eval()
    path = tmp_path / "model.pt"
    torch.save({"arch": "maskreid_mf", "feat_dim": 256, "num_classes": 7, "state_dict": model.state_dict(),
                "input_size": [72, 28], "model_cfg": {"width": 0.25}, "streams": ["orig", "masked"]}, path)
    onnx_path = export_onnx(path, tmp_path / "m.onnx")
    x, m = torch.randn(3, 3, 72, 28), torch.randn(3, 3, 72, 28)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(load_model(path, "cpu")(x, m).feat, dim=1).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(["feat"], {"image": x.numpy(), "masked": m.numpy()})[0]
    assert got.shape == (3, 256)
    np.testing.assert_allclose(got, ref, atol=1e-4)
