import json

import pytest
import torch

from echosonar.config.encode import EncoderTrainConfig
from echosonar.encode import load_encoder
from echosonar.encode.data import MEASURE_KEYS, clip_table, visible_measure_mask
from echosonar.encode.losses import (
    HeadsConfig,
    PretrainHeads,
    masked_bce,
    multitask_loss,
    random_cell_mask,
)
from echosonar.encode.models import ClipEncoder
from echosonar.encode.pretrain import batch_of, pretrain
from echosonar.taxonomy import LABEL_KEYS, visible_label_mask

from .helpers import make_studies, tiny_model_config


def test_clip_table_masks_follow_views():
    table = clip_table(make_studies(6))
    from echosonar.taxonomy import CLASSIFIER_VIEWS

    for i in range(len(table)):
        view = CLASSIFIER_VIEWS[int(table.views[i])]
        assert table.label_mask[i].tolist() == [float(v) for v in visible_label_mask(view)]
        assert table.measure_mask[i].tolist() == [float(v) for v in visible_measure_mask(view)]
    bav = LABEL_KEYS.index("bicuspid_aortic_valve")
    assert table.label_mask[:, bav].sum() == (table.views == CLASSIFIER_VIEWS.index("PSAX_AV")
                                              ).sum()
    assert table.label_mask[:, LABEL_KEYS.index("healthy")].sum() == 0
    assert "sex" not in MEASURE_KEYS and "heart_rate_bpm" not in MEASURE_KEYS


def test_invisible_label_contributes_no_loss_or_gradient():
    torch.manual_seed(0)
    enc = ClipEncoder(tiny_model_config())
    heads = PretrainHeads(HeadsConfig(dim=32))
    table = clip_table(make_studies(4))
    b = batch_of(table, list(range(len(table))))
    weights = {"label": 1.0, "measure": 0.0}
    loss_a, _ = multitask_loss(enc, heads, b, weights)
    flipped = dict(b)
    flipped["labels"] = torch.where(b["label_mask"] > 0, b["labels"], 1 - b["labels"])
    loss_b, _ = multitask_loss(enc, heads, flipped, weights)
    assert torch.allclose(loss_a, loss_b)  # targets of invisible labels are irrelevant
    logits = torch.randn(5, len(LABEL_KEYS), requires_grad=True)
    mask = torch.tensor([visible_label_mask(v) for v in ["A4C", "PSAX_AV", "A2C", "PLAX",
                                                         "A4C_COLOR"]], dtype=torch.float32)
    masked_bce(logits, torch.ones_like(logits), mask).backward()
    assert torch.all(logits.grad[mask == 0] == 0) and torch.all(logits.grad[mask == 1] != 0)
    # a clip whose view sees nothing of a label still gives measurement loss only where visible
    j = LABEL_KEYS.index("bicuspid_aortic_valve")
    assert mask[0, j] == 0 and mask[1, j] == 1


def test_bias_from_priors_and_cell_mask():
    heads = PretrainHeads(HeadsConfig(dim=8))
    labels = torch.tensor([[1.0] * 14, [0.0] * 14, [0.0] * 14, [0.0] * 14])
    mask = torch.ones(4, 14)
    heads.init_from_data(labels, mask, torch.randn(4, len(MEASURE_KEYS)) * 3 + 5,
                         torch.ones(4, len(MEASURE_KEYS)))
    p = torch.sigmoid(heads.label.bias)
    assert torch.allclose(p, torch.full((14,), 1.5 / 5))
    cm = random_cell_mask(3, 2, 2, 0.5, torch.Generator().manual_seed(0))
    assert cm.shape == (3, 2, 4) and cm.sum(dim=(1, 2)).tolist() == [4, 4, 4]


def test_tiny_training_lowers_loss_and_changes_params(tmp_path):
    studies = make_studies(20)
    train = clip_table([s for s in studies if s.split == "train"])
    val = clip_table([s for s in studies if s.split == "val"])
    cfg = EncoderTrainConfig(epochs=4, batch_size=8, lr=3e-3, warmup_frac=0.0, augment=True,
                             mask_video_weight=0.5, threads=1)
    torch.manual_seed(cfg.seed)
    before = ClipEncoder(tiny_model_config()).state_dict()
    res = pretrain(train, val, tiny_model_config(), cfg, tmp_path / "enc", log=lambda s: None)
    hist = res["history"]
    assert hist[-1]["train_label"] < hist[0]["train_label"]
    assert {"val_auroc", "val_r2", "train_mask_video"} <= set(hist[0])
    enc = load_encoder(tmp_path / "enc")
    changed = [k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2
    assert (tmp_path / "enc" / "heads" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "enc" / "metrics.json").read_text())
    assert len(saved["history"]) == 4


def test_resume_is_exact(tmp_path):
    studies = make_studies(10)
    train = clip_table([s for s in studies if s.split == "train"])
    cfg = EncoderTrainConfig(epochs=2, batch_size=8, warmup_frac=0.0, threads=1)
    pretrain(train, None, tiny_model_config(), cfg, tmp_path / "straight", log=lambda s: None)

    def crash(msg):  # simulated kill right after epoch 0 was saved
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(train, None, tiny_model_config(), cfg, tmp_path / "split", log=crash)
    res = pretrain(train, None, tiny_model_config(), cfg, tmp_path / "split", resume=True,
                   log=lambda s: None)
    assert [h["epoch"] for h in res["history"]] == [0, 1]
    a = load_encoder(tmp_path / "straight" / "last").state_dict()
    b = load_encoder(tmp_path / "split" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
