"""View classifier: model, synthetic OTHER clips, a tiny training run, and the two commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echosonar.cli import main
from echosonar.config.ingest import IngestConfig, ViewModelConfig, ViewTrainConfig
from echosonar.ingest import ingest_manifest, write_cache
from echosonar.ingest.view_model import ViewClassifier, clip_input, predict_views
from echosonar.ingest.view_train import (
    OTHER_KINDS,
    ViewData,
    augment,
    evaluate,
    make_other,
    train_view_classifier,
)
from echosonar.schema import Clip
from echosonar.taxonomy import CLASSIFIER_VIEWS

TINY = ViewModelConfig(widths=[8, 16, 16, 16], n_frames=2, image_size=32)


def test_model_shapes_and_pretrained_roundtrip(tmp_path):
    m = ViewClassifier(TINY).eval()
    x = torch.rand(2, 2, 3, 32, 32)
    assert m(x).shape == (2, len(CLASSIFIER_VIEWS))
    m.save_pretrained(tmp_path / "vc")
    m2 = ViewClassifier.from_pretrained(tmp_path / "vc").eval()
    torch.testing.assert_close(m(x), m2(x))
    grey = Clip("OTHER", np.random.rand(16, 1, 64, 64).astype(np.float32), 0.1, np.zeros(16))
    col = np.random.randint(0, 255, (16, 3, 48, 48), dtype=np.uint8)  # uint8, other size
    preds = predict_views(m, [grey, col])
    assert all(v in CLASSIFIER_VIEWS and 0 < c <= 1 for v, c in preds)
    assert clip_input(col, 3, 32).shape == (3, 3, 32, 32)


def test_other_kinds_and_augment_stay_valid():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64) * (torch.rand(1, 1, 64, 64) > 0.3)
    for kind in OTHER_KINDS:
        y = make_other(x.clone(), g, kind, partner=torch.rand(4, 3, 64, 64))
        assert y.shape == x.shape and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
        assert not torch.allclose(y, x), kind
    b = augment(torch.rand(2, 4, 3, 64, 64), g, 1.0)
    assert b.shape == (2, 4, 3, 64, 64) and 0 <= b.min() and b.max() <= 1


def test_tiny_training_fits_simulated_views(sim_set):
    studies = ingest_manifest(sim_set, IngestConfig(clip_len=8))
    classes = list(TINY.classes)
    clips = [c for s in studies for c in s.clips]
    data = ViewData([c.frames for c in clips], np.array([classes.index(c.view) for c in clips]),
                    ["train"] * len(clips))
    tcfg = ViewTrainConfig(epochs=50, batch_size=len(clips), lr=1e-2, augment=0.0,
                           other_fraction=0.0, threads=1)
    model, losses = train_view_classifier(data, TINY, tcfg)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), (losses[:5], losses[-5:])
    assert evaluate(model, data, tcfg, with_other=False)["accuracy"] >= 0.6


@pytest.mark.filterwarnings("ignore")
def test_train_and_ingest_commands(sim_set, tmp_path, capsys):
    studies = ingest_manifest(sim_set, IngestConfig(clip_len=8))
    for s, split in zip(studies, ["train", "val"], strict=False):
        s.split = split
    write_cache(studies, tmp_path / "cache")
    out = tmp_path / "vc"
    sets = ["--set", "ingest.view.widths=[8,8,16,16]", "--set", "ingest.view.n_frames=2",
            "--set", "ingest.view.image_size=32",
            "--set", "ingest.view_train.epochs=1", "--set", "ingest.view_train.threads=1"]
    assert main(["train", "view-classifier", "--data", str(tmp_path / "cache"), "--out", str(out),
                 "--eval", f"again={tmp_path / 'cache'}", *sets]) == 0
    for f in ("model.safetensors", "config.json", "config.yaml", "run_info.json",
              "metrics.json"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val", "again", "real_fixture"} <= set(metrics)
    assert metrics["real_fixture"]["view"] in CLASSIFIER_VIEWS
    assert 0 < metrics["real_fixture"]["confidence"] <= 1
    # a calibration set that is not there is a clear error, not a traceback
    assert main(["train", "view-classifier", "--data", str(tmp_path / "cache"), "--out", str(out),
                 "--ood-only", "--ood-calibration", str(tmp_path / "nope"), *sets]) == 2
    assert "--ood-calibration" in capsys.readouterr().err
    capsys.readouterr()
    # DICOMs without views: the classifier decides, --views prints each decision
    assert main(["ingest", str(sim_set / "studies"), "--out", str(tmp_path / "c2"), "--views",
                 "--view-model", str(out), "--workers", "2", "--set", "ingest.clip_len=8"]) == 0
    text = capsys.readouterr().out
    n_dcm = len(list((sim_set / "studies").rglob("*.dcm")))
    n_mp4 = len(list((sim_set / "studies").rglob("*.mp4")))  # videos: grouped by folder
    assert text.count("[classifier, conf") == n_dcm + n_mp4
    assert "skipped" in text and "]: not a DICOM file" in text and "study.json" not in text
    summary = json.loads((tmp_path / "c2" / "ingest_summary.json").read_text())
    assert summary["clips"] == n_dcm + n_mp4 and summary["studies"] == 4
    # a manifest: views are given, the classifier's opinion is printed next to them
    assert main(["ingest", str(sim_set), "--out", str(tmp_path / "c3"), "--views",
                 "--view-model", str(out), "--set", "ingest.clip_len=8"]) == 0
    assert capsys.readouterr().out.count("[given]; classifier") == n_dcm
