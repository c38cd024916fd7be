import numpy as np
import pytest
import torch

from echosonar.config.detect import DetectConfig
from echosonar.detect.model import Detector, view_indices
from echosonar.io.checkpoint import CheckpointError

TINY = dict(embed_dim=32, widths=[8, 16, 24, 32], decoder_layers=1, heads=2, image_size=32)


@pytest.mark.parametrize("assign", ["class", "hungarian"])
def test_forward_and_predict_shapes_for_grey_and_colour(assign):
    torch.manual_seed(0)
    m = Detector(DetectConfig(assign=assign, num_queries=14, **TINY)).eval()
    q = 12 if assign == "class" else 14
    for c, size in ((1, 32), (3, 48)):
        x = torch.rand(5, c, size, size)
        out = m(x, view_indices(["A4C"] * 5))
        assert out["boxes"].shape == (5, q, 4)
        assert out["hidden"].shape == (5, q, 32)
        assert out["logits"].shape == ((5, q) if assign == "class" else (5, q, 13))
        assert len(out["aux"]) == 1  # 1 decoder layer + the box before RoI refinement
        p = m.predict(x)
        assert p["scores"].shape == (5, 12) and p["boxes"].shape == (5, 12, 4)
        assert p["tokens"].shape == (5, 12, 32)
        b = p["boxes"]
        assert (b[..., 2] >= b[..., 0]).all() and (b >= 0).all() and (b <= 1).all()
    with pytest.raises(ValueError, match="C = 1 or 3"):
        m(torch.rand(2, 2, 32, 32))


def test_determinism_same_seed_same_model_and_outputs():
    cfg = DetectConfig(**TINY)
    torch.manual_seed(3)
    a = Detector(cfg).eval()
    torch.manual_seed(3)
    b = Detector(cfg).eval()
    x = torch.rand(4, 1, 32, 32)
    pa, pb = a.predict(x), b.predict(x)
    for k in pa:
        assert torch.equal(pa[k], pb[k])
    assert torch.equal(a.predict(x)["boxes"], pa["boxes"])  # repeated calls agree


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    m = Detector(DetectConfig(**TINY)).eval()
    with torch.no_grad():
        m.measure_calib.add_(0.5)  # buffers travel with the weights
    m.save_pretrained(tmp_path / "det")
    m2 = Detector.from_pretrained(tmp_path / "det").eval()
    assert m2.config == m.config
    assert torch.equal(m2.measure_calib, m.measure_calib)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(m.predict(x)["boxes"], m2.predict(x)["boxes"])
    (tmp_path / "det" / "model.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError):
        Detector.from_pretrained(tmp_path / "det")


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="assign"):
        Detector(DetectConfig(assign="greedy"))
    with pytest.raises(ValueError, match="multiple"):
        Detector(DetectConfig(embed_dim=30))
    assert np.isfinite(Detector(DetectConfig(**TINY)).measure_calib.numpy()).all()
