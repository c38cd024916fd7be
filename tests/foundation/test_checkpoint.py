from dataclasses import dataclass

import pytest
import torch
from torch import nn

from echosonar.config.base import opt
from echosonar.io.checkpoint import (
    CONFIG,
    WEIGHTS,
    CheckpointError,
    Pretrained,
    load_training_state,
    save_training_state,
)


@dataclass
class TinyConfig:
    width: int = opt(4, "hidden width")


class Tiny(nn.Module, Pretrained):
    checkpoint_kind = "tiny"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(3, config.width)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = Tiny(TinyConfig(width=5))
    m.save_pretrained(tmp_path / "ck", meta={"note": "x"})
    m2 = Tiny.from_pretrained(tmp_path / "ck")
    assert m2.config.width == 5
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])


def test_truncated_and_tampered_checkpoints_are_refused(tmp_path):
    m = Tiny(TinyConfig())
    d = m.save_pretrained(tmp_path / "ck")
    w = d / WEIGHTS
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checksum"):
        Tiny.from_pretrained(d)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    w.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        Tiny.from_pretrained(d)


def test_wrong_kind_missing_and_corrupt_config(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        Tiny.from_pretrained(tmp_path)
    d = Tiny(TinyConfig()).save_pretrained(tmp_path / "ck")
    text = (d / CONFIG).read_text()
    (d / CONFIG).write_text(text.replace('"tiny"', '"detector"'))
    with pytest.raises(CheckpointError, match="expected 'tiny'"):
        Tiny.from_pretrained(d)
    (d / CONFIG).write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        Tiny.from_pretrained(d)


def test_training_state_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    m = Tiny(TinyConfig())
    opt_ = torch.optim.AdamW(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt_, step_size=1, gamma=0.5)

    def step():
        loss = m.lin(torch.randn(2, 3)).pow(2).sum()
        opt_.zero_grad()
        loss.backward()
        opt_.step()
        sched.step()
        return loss.item()

    step()
    m.save_pretrained(tmp_path / "ck")
    save_training_state(tmp_path / "ck", opt_, sched, step=1)
    expected = [step() for _ in range(3)]

    m2 = Tiny.from_pretrained(tmp_path / "ck")
    m.load_state_dict(m2.state_dict())
    opt_ = torch.optim.AdamW(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt_, step_size=1, gamma=0.5)
    meta = load_training_state(tmp_path / "ck", opt_, sched)
    assert meta["step"] == 1
    assert [step() for _ in range(3)] == expected
