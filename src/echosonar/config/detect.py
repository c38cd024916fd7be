"""Detector config (owned by the detect stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class DetectConfig:
    embed_dim: int = opt(64, "width of the per-structure embedding (structure tokens)")
    epochs: int = opt(10, "training epochs")
    lr: float = opt(1e-3, "AdamW learning rate")
    batch_size: int = opt(32, "frames per batch")
    seed: int = opt(0, "random seed")
