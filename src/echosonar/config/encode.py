"""Video encoder and classifier-baseline config (owned by the encode stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class EncodeConfig:
    dim: int = opt(128, "token width of the clip encoder")
    n_tokens: int = opt(8, "space-time tokens per clip (plus one global token)")
    epochs: int = opt(10, "pretraining epochs")
    lr: float = opt(1e-3, "AdamW learning rate")
    batch_size: int = opt(16, "clips per batch")
    seed: int = opt(0, "random seed")
