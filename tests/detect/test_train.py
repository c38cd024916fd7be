import json

import numpy as np
import pytest
import torch

from echosonar.config import load_config
from echosonar.config.detect import DetectConfig
from echosonar.detect import train as train_mod
from echosonar.detect.data import augment, build_frameset, clip_targets, epoch_indices
from echosonar.detect.losses import DetectionLoss
from echosonar.detect.model import Detector
from echosonar.detect.synthetic import synthetic_studies
from echosonar.io.checkpoint import load_checkpoint

TINY = dict(embed_dim=32, widths=[8, 16, 24, 32], decoder_layers=1, heads=2, image_size=32)


@pytest.mark.parametrize("assign", ["class", "hungarian"])
def test_tiny_training_run_reduces_the_loss(assign):
    torch.manual_seed(0)
    cfg = DetectConfig(assign=assign, **TINY)
    fs = build_frameset(synthetic_studies(4, seed=0, clips=2, frames=2, size=32), 32)
    model, loss_fn = Detector(cfg), DetectionLoss(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = fs.frames.float() / 255

    def loss_now():
        with torch.no_grad():
            return loss_fn(model(x, fs.views), fs.present, fs.boxes)[0].item()

    before = loss_now()
    for _ in range(25):
        loss, _ = loss_fn(model(x, fs.views), fs.present, fs.boxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = loss_now()
    assert np.isfinite(after) and after < 0.75 * before, (before, after)


def test_targets_sampling_and_augmentation_keep_boxes_consistent():
    st = synthetic_studies(2, seed=1, clips=2, frames=3, size=32, channels=3)
    present, boxes = clip_targets(st[0].clips[0])
    assert present.shape == (3, 12) and boxes.shape == (3, 12, 4)
    assert ((boxes[present] >= 0) & (boxes[present] <= 1)).all()
    fs = build_frameset(st, 32)
    assert len(fs) == 12 and fs.n_clips == 4 and fs.frames.dtype == torch.uint8
    idx = epoch_indices(fs, 2, torch.Generator().manual_seed(0))
    assert len(idx) == 8 and len(set(idx.tolist())) == 8
    g = torch.Generator().manual_seed(0)
    x = fs.frames.float() / 255
    same = augment(x, fs.present, fs.boxes, 0.0, g)
    assert torch.equal(same[0], x) and torch.equal(same[2], fs.boxes)
    xa, pa, ba = augment(x, fs.present, fs.boxes, 1.0, g)
    assert xa.shape == x.shape and 0 <= xa.min() and xa.max() <= 1
    assert (pa <= fs.present).all()  # augmentation may drop a box, never invent one
    assert ((ba[pa] > 0).all() and (ba[pa] <= 1).all())
    assert (ba[~pa] == 0).all()


@pytest.fixture
def tiny_cache(tmp_path):
    from echosonar.ingest.cache import write_cache

    studies = synthetic_studies(5, seed=2, clips=2, frames=4, size=32)
    for s, split in zip(studies, ["train", "train", "train", "val", "test"], strict=True):
        s.split = split
        s.measurements = {"lvedd_cm": 4.5, "lvesd_cm": 3.0, "ef_pct": 60.0}
    write_cache(studies, tmp_path / "cache")
    return tmp_path / "cache"


def _cfg(epochs):
    sets = [f"detect.{k}={json.dumps(v)}" for k, v in TINY.items()]
    return load_config(overrides=sets + [f"detect.epochs={epochs}", "detect.batch_size=8",
                                         "detect.frames_per_clip=2", "detect.warmup_steps=2",
                                         "detect.threads=1", "detect.us_augment=1.0"])


def test_train_detector_writes_outputs_and_resumes_exactly(tiny_cache, tmp_path, monkeypatch):
    full = train_mod.train_detector(_cfg(2), tiny_cache, tmp_path / "a", log=lambda *_: None)
    for f in ("model.safetensors", "config.json", "config.yaml", "run_info.json",
              "metrics.jsonl", "eval.json", "training_state.json"):
        assert (tmp_path / "a" / f).is_file(), f
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_map50" in rows[-1]
    assert full["test"]["coco"]["map50"] is not None
    # interrupt a second run after its first epoch, then resume it
    real = train_mod.train_epoch

    def crash(*a, **kw):
        if a[6] == 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_mod, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_detector(_cfg(2), tiny_cache, tmp_path / "b", log=lambda *_: None)
    monkeypatch.setattr(train_mod, "train_epoch", real)
    train_mod.train_detector(_cfg(2), tiny_cache, tmp_path / "b", resume=True,
                             log=lambda *_: None)
    ta, _ = load_checkpoint(tmp_path / "a")
    tb, _ = load_checkpoint(tmp_path / "b")
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_detect_cli_on_a_cache_with_eval_and_overlay(tiny_cache, tmp_path):
    from echosonar.cli import main

    m = Detector(DetectConfig(**TINY))
    m.save_pretrained(tmp_path / "det")
    out, png = tmp_path / "det.json", tmp_path / "ov.png"
    rc = main(["detect", str(tiny_cache), "--model", str(tmp_path / "det"), "--out", str(out),
               "--overlay", str(png), "--eval", "--threads", "1"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert len(rep["studies"]) == 5 and "coco" in rep["eval"]
    assert png.stat().st_size > 100
    assert main(["detect", str(tmp_path / "nope"), "--model", str(tmp_path / "det")]) == 2


def test_train_cli_reports_a_missing_cache_clearly(tmp_path, capsys):
    from echosonar.cli import main

    rc = main(["train", "detector", "--cache", str(tmp_path / "none"), "--out",
               str(tmp_path / "o")])
    assert rc == 2 and "no clip cache index" in capsys.readouterr().err


def test_init_from_starts_at_the_given_weights_and_checks_the_architecture(tiny_cache, tmp_path):
    from echosonar.io.checkpoint import CheckpointError

    train_mod.train_detector(_cfg(1), tiny_cache, tmp_path / "a", log=lambda *_: None)
    ta, _ = load_checkpoint(tmp_path / "a")
    cfg = _cfg(0)
    cfg.detect.init_from = str(tmp_path / "a")
    train_mod.train_detector(cfg, tiny_cache, tmp_path / "b", log=lambda *_: None)
    tb, _ = load_checkpoint(tmp_path / "b")
    for k in ta:  # no epoch: only the measurement calibration is refitted
        if k != "measure_calib":
            assert torch.equal(ta[k], tb[k]), k
    cfg.detect.embed_dim = 16
    with pytest.raises(CheckpointError, match="architecture"):
        train_mod.train_detector(cfg, tiny_cache, tmp_path / "c", log=lambda *_: None)
