"""The OOD guard of the view classifier on a tiny model: fitting, levels, safe storage,
ultrasound augmentation, and the non-ultrasound paths that need no trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echosonar.config.ingest import ViewModelConfig
from echosonar.ingest.real_check import ct_like_slice, default_ingest_reason, write_us_dicom
from echosonar.ingest.view_model import ViewClassifier
from echosonar.ingest.view_ood import (
    OOD_FILE,
    OODError,
    assess_clips,
    auroc,
    conformal_threshold,
    fit_ood,
    layer_dims,
    layer_features,
    load_ood,
)
from echosonar.ingest.view_train import ViewData, sector_mask, us_augment

TINY = ViewModelConfig(widths=[8, 16, 16, 16], n_frames=2, image_size=32)


def _fan(rng: np.random.Generator, view: int, t: int = 6, s: int = 48) -> np.ndarray:
    """A speckled fan with a dark 'chamber' whose place depends on the view."""
    y, x = np.mgrid[0:s, 0:s] + 0.5
    ang = np.degrees(np.arctan2(np.abs(x - s / 2), y))
    fan = (np.hypot(x - s / 2, y) < s * 0.95) & (ang < 40)
    cx = s * (0.35 + 0.3 * view)
    out = np.zeros((t, 1, s, s), np.uint8)
    for k in range(t):
        img = rng.gamma(2.0, 50.0, (s, s)) * fan
        img[(x - cx) ** 2 + (y - s * 0.5) ** 2 < (s * 0.12) ** 2] = 5
        out[k, 0] = np.clip(img, 0, 255)
    return out


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = ViewClassifier(TINY).eval()
    frames = [_fan(rng, i % 2) for i in range(48)]
    labels = np.array([i % 2 for i in range(48)])  # A4C, A2C
    train = ViewData(frames[:36], labels[:36], ["train"] * 36)
    val = ViewData(frames[36:], labels[36:], ["val"] * 12)
    model.ood = fit_ood(model, train, val, augment_passes=1)
    return model, rng


def test_fit_levels_and_scores(fitted):
    model, rng = fitted
    st = model.ood
    assert st.classes == ["A4C", "A2C"] and set(st.layers) == {"L2", "L3", "L4", "L5", "pen"}
    assert 0 < st.warn_at < st.reject_at
    inside = assess_clips(model, [_fan(rng, 0), _fan(rng, 1)])
    ct = ct_like_slice(64, 6)[:, None]
    noise = (rng.random((6, 1, 48, 48)) * 255).astype(np.uint8)
    outside = assess_clips(model, [ct, noise])
    # an untrained tiny CNN: the ordering holds, the margins of a trained one do not
    assert max(a["score"] for a in inside) < min(a["score"] for a in outside)
    assert all(a["level"] != "in" for a in outside), outside
    assert all(np.isfinite(a["energy"]) for a in inside + outside)
    import dataclasses

    strict = dataclasses.replace(st, warn_at=max(a["score"] for a in inside) * 1.01,
                                 reject_at=min(a["score"] for a in outside) * 0.99)
    model.ood = strict
    try:
        assert [a["level"] for a in assess_clips(model, [ct])] == ["out"]
        a = assess_clips(model, [ct])[0]
        assert "not recognisable as cardiac ultrasound" in a["reason"]
    finally:
        model.ood = st
    assert auroc([1, 2], [3, 4]) == 1.0 and auroc([1], [1]) == 0.5


def test_conformal_threshold_and_study_calibration(fitted):
    # the ceil((n + 1)(1 - alpha))-th smallest: with 99 scores and alpha 2 %, the 98th
    v = np.arange(1, 100, dtype=float)
    assert conformal_threshold(v, 0.02) == 98.0 and conformal_threshold(v, 0.5) == 50.0
    assert conformal_threshold(v[:40], 0.02) is None  # too few for a 2 % guarantee
    model, rng = fitted
    # 12 held-out clips, no study ids: too few, so the farthest clip x 1.2 (and said so)
    assert model.ood.meta["warn_rule"].startswith("farthest") and \
        model.ood.meta["held_out_studies"] == 12
    # with a calibration set of 60 two-clip studies the rule is the conformal one, per study
    frames = [_fan(rng, i % 2) for i in range(120)]
    cal = ViewData(frames, np.array([i % 2 for i in range(120)]), ["calibration"] * 120,
                   np.repeat(np.arange(60), 2))
    train = ViewData([_fan(rng, i % 2) for i in range(36)], np.array([i % 2 for i in range(36)]),
                     ["train"] * 36)
    st = fit_ood(model, train, ViewData([], np.zeros(0, np.int64), []), augment_passes=0,
                 calibration=cal)
    assert st.meta["held_out_studies"] == 60 and st.meta["val_clips"] == 120
    assert st.meta["warn_rule"].startswith("conformal")
    x, col = torch.stack([_inp(model, f) for f in frames]), torch.zeros(120, dtype=torch.bool)
    from echosonar.ingest.view_ood import scores_from_inputs

    sc = scores_from_inputs(model, st, x, col)["mahalanobis"].numpy()
    maxima = sc.reshape(60, 2).max(1)
    assert st.warn_at == pytest.approx(np.sort(maxima)[int(np.ceil(61 * 0.98)) - 1], rel=1e-4)


def _inp(model, frames):
    from echosonar.ingest.view_model import clip_input

    c = model.config
    return clip_input(frames, c.n_frames, c.image_size, normalize=c.normalize)


def test_stats_roundtrip_and_safe_loading(fitted, tmp_path):
    model, rng = fitted
    model.save_pretrained(tmp_path / "vc")
    assert ViewClassifier.from_pretrained(tmp_path / "vc").ood is None  # none stored yet
    model.ood.save(tmp_path / "vc")
    again = ViewClassifier.from_pretrained(tmp_path / "vc")
    assert again.ood is not None and again.ood.warn_at == pytest.approx(model.ood.warn_at)
    clip = _fan(rng, 0)
    assert assess_clips(again, [clip])[0]["score"] == pytest.approx(
        assess_clips(model, [clip])[0]["score"], rel=1e-5)
    # a file for another architecture, or not a safetensors file at all, is refused
    other = ViewClassifier(ViewModelConfig(widths=[8, 8, 8, 8], n_frames=2, image_size=32))
    other.save_pretrained(tmp_path / "vc2")
    (tmp_path / "vc2" / OOD_FILE).write_bytes((tmp_path / "vc" / OOD_FILE).read_bytes())
    with pytest.raises(OODError, match="does not fit"):
        ViewClassifier.from_pretrained(tmp_path / "vc2")
    (tmp_path / "vc2" / OOD_FILE).write_bytes(b"\x80\x04not safetensors, maybe a pickle")
    with pytest.raises(OODError):
        load_ood(tmp_path / "vc2")


def test_layer_features_match_the_classifier(fitted):
    model, _ = fitted
    x = torch.rand(3, 2, 3, 32, 32)
    feats, logits = layer_features(model, x)
    torch.testing.assert_close(feats["pen"], model.embed(x))
    torch.testing.assert_close(logits, model.head(model.embed(x)))
    assert {k: v.shape[1] for k, v in feats.items()} == layer_dims(TINY.widths)


def test_us_augment_keeps_range_and_sector():
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    fan = ((x.abs() < y * 0.8) & (y < 0.95)).float()
    clip = (torch.rand(4, 4, 1, 64, 64) * fan).expand(-1, -1, 3, -1, -1).contiguous()
    out = us_augment(clip, g, 1.0)
    assert out.shape == clip.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out, clip)
    assert torch.equal(us_augment(clip, g, 0.0), clip)
    m = sector_mask(clip)
    assert m.shape == (4, 1, 1, 64, 64) and m[0, 0, 0, 40, 32] == 1 and m[0, 0, 0, 5, 2] == 0


def test_non_ultrasound_dicoms_are_skipped_by_modality(tmp_path):
    from pydicom.data import get_testdata_file

    for name, modality in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        path = get_testdata_file(name, download=False)
        if path is None:
            pytest.skip(f"pydicom test file {name} not installed")
        assert default_ingest_reason(path) == (f"modality {modality} is not in "
                                               "allowed_modalities ['US']")
    # a CT-like slice saved as an ultrasound DICOM gets past the header check: the content
    # guard must catch it (tests/ingest/test_real_echo.py, with the trained classifier)
    p = write_us_dicom(tmp_path / "ct.dcm", ct_like_slice(128, 4))
    assert default_ingest_reason(p) == "accepted"
