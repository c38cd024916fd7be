"""Evaluation config (owned by the evaluate stage)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class EvalConfig:
    bootstrap: int = opt(1000, "bootstrap resamples for confidence intervals")
    seed: int = opt(0, "bootstrap seed")
    split: str = opt("test", "which split to evaluate")
