"""GRPO config (owned by the reason stage: GRPO)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class GRPOConfig:
    lr: float = opt(5e-5, "AdamW learning rate")
    steps: int = opt(50, "optimizer steps")
    group_size: int = opt(8, "completions sampled per study (G)")
    temperature: float = opt(1.0, "sampling temperature (log-probs use the same)")
    beta: float = opt(0.0, "k3 KL weight to the frozen SFT model; 0 keeps no reference")
    epsilon: float = opt(0.2, "clip range of the importance ratio")
    epsilon_high: float = opt(0.0, "upper clip range; 0 means the same as epsilon")
    loss_type: str = opt("dapo", "loss normalisation: grpo, dapo or dr_grpo")
    seed: int = opt(0, "random seed")
