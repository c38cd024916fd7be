import pytest
import torch
from torch import nn

from echosonar.encode import ClipEncoder, ModuleEncoder, VideoEncoder, load_encoder
from echosonar.encode.models import prepare_frames
from echosonar.io.checkpoint import CheckpointError

from .helpers import tiny_model_config


@pytest.mark.parametrize("arch", ["conv21d", "tubelet"])
def test_shapes_grey_and_colour(arch):
    torch.manual_seed(0)
    enc = ClipEncoder(tiny_model_config(arch)).eval()
    assert isinstance(enc, VideoEncoder)
    grey = torch.rand(2, 8, 1, 32, 32)
    colour = torch.rand(2, 8, 3, 32, 32)
    assert enc.encode(grey, ["A4C", "PLAX"]).shape == (2, 1 + enc.n_tokens, enc.dim)
    assert enc.encode(colour, ["A4C_COLOR", "PLAX_COLOR"]).shape == (2, 9, 32)
    # other lengths and sizes are resampled / resized to the configured ones
    assert enc.encode(torch.rand(1, 13, 1, 40, 40), ["A2C"]).shape == (1, 9, 32)


def test_colour_is_kept_and_view_matters():
    torch.manual_seed(0)
    enc = ClipEncoder(tiny_model_config()).eval()
    rgb = torch.rand(1, 8, 3, 32, 32)
    grey = rgb.mean(2, keepdim=True)
    a = enc.encode(rgb, ["A4C_COLOR"])
    assert not torch.allclose(a, enc.encode(grey, ["A4C_COLOR"]), atol=1e-4)
    assert not torch.allclose(a, enc.encode(rgb, ["PLAX_COLOR"]), atol=1e-4)
    x = prepare_frames(torch.rand(1, 8, 1, 32, 32), 8, 32)
    assert x.shape == (1, 3, 8, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    with pytest.raises(ValueError, match="1 \\(B-mode\\) or 3"):
        prepare_frames(torch.rand(1, 8, 2, 32, 32), 8, 32)
    with pytest.raises(ValueError, match="unknown view"):
        enc.encode(rgb, ["NOPE"])


def test_determinism():
    cfg = tiny_model_config()
    x = torch.rand(2, 8, 1, 32, 32)
    torch.manual_seed(3)
    a = ClipEncoder(cfg).eval()
    torch.manual_seed(3)
    b = ClipEncoder(cfg).eval()
    assert torch.equal(a.encode(x, ["A4C", "A2C"]), b.encode(x, ["A4C", "A2C"]))
    assert torch.equal(a.encode(x, ["A4C", "A2C"]), a.encode(x, ["A4C", "A2C"]))


def test_save_load_and_refusals(tmp_path):
    torch.manual_seed(0)
    enc = ClipEncoder(tiny_model_config("tubelet")).eval()
    enc.save_pretrained(tmp_path / "enc")
    again = load_encoder(tmp_path / "enc")
    x = torch.rand(2, 8, 3, 32, 32)
    # frozen weights let torch take its fused attention path: equal up to float rounding
    torch.testing.assert_close(enc.encode(x, ["A4C", "PSAX_AV"]),
                               again.encode(x, ["A4C", "PSAX_AV"]), atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in again.parameters()) and not again.training
    w = tmp_path / "enc" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="checksum"):
        load_encoder(tmp_path / "enc")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_encoder(tmp_path / "missing")


class _MapNet(nn.Module):
    """[B, 3, T, H, W] -> feature map [B, 16, T/2, H/4, W/4] (stands in for an MViT)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 16, (2, 4, 4), stride=(2, 4, 4))

    def forward(self, x):
        return self.conv(x)


def build_adapter(arg: str = ""):
    return ModuleEncoder(_MapNet(), dim=16, clip_len=8, image_size=32, name="mapnet")


def test_module_adapter_and_python_spec():
    enc = load_encoder(f"python:{__name__}:build_adapter")
    assert isinstance(enc, VideoEncoder)
    out = enc.encode(torch.rand(2, 8, 1, 48, 48), ["A4C", "A2C"])
    assert out.shape == (2, 9, 16) and enc.n_tokens == 8
    vec = ModuleEncoder(nn.Sequential(nn.Flatten(), nn.LazyLinear(12)), dim=12, clip_len=4,
                        image_size=8)
    assert vec.encode(torch.rand(3, 4, 3, 8, 8), ["A4C"] * 3).shape == (3, 1, 12)
    bad = ModuleEncoder(_MapNet(), dim=99, clip_len=8, image_size=32)
    with pytest.raises(ValueError, match="declared dim"):
        bad.encode(torch.rand(1, 8, 1, 32, 32), ["A4C"])
    with pytest.raises(ValueError, match="cannot import"):
        load_encoder("python:no_such_module_xyz:build")


def test_bad_config():
    cfg = tiny_model_config()
    cfg.arch = "mvit"
    with pytest.raises(ValueError, match="unknown encoder arch"):
        ClipEncoder(cfg)
    cfg = tiny_model_config("tubelet")
    cfg.tubelet = [3, 8, 8]
    with pytest.raises(ValueError, match="must tile"):
        ClipEncoder(cfg)


def test_input_stats_are_per_view_and_saved(tmp_path):
    torch.manual_seed(0)
    enc = ClipEncoder(tiny_model_config())
    a4c = [torch.full((8, 1, 32, 32), 0.2), torch.full((8, 1, 32, 32), 0.4)]
    colour = [torch.rand(8, 3, 32, 32)]
    from echosonar.encode.models import VIEW_INDEX

    enc.fit_input_stats(a4c + colour, [VIEW_INDEX["A4C"]] * 2 + [VIEW_INDEX["A4C_COLOR"]])
    m, s = enc.input_mean[VIEW_INDEX["A4C"]], enc.input_std[VIEW_INDEX["A4C"]]
    torch.testing.assert_close(m, torch.full_like(m, 0.3))
    torch.testing.assert_close(s, torch.full_like(s, 0.1))
    assert torch.all(enc.input_mean[VIEW_INDEX["PLAX"]] == 0.5)   # unseen view: default
    enc.save_pretrained(tmp_path / "e")
    again = load_encoder(tmp_path / "e")
    assert torch.equal(again.input_std, enc.input_std)
