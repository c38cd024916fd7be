"""Language-model and SFT configs (owned by the reason stage: model + SFT)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class LMConfig:
    hidden_size: int = opt(256, "LM hidden width (from-scratch model)")
    layers: int = opt(4, "decoder layers (from-scratch model)")
    heads: int = opt(4, "attention heads")
    vocab_size: int = opt(2048, "BPE vocabulary size trained on the corpus")
    max_len: int = opt(1024, "maximum sequence length, prompt + completion")
    base_model: str = opt("", "optional local HF causal-LM directory to fine-tune with LoRA")
    use_structure_tokens: bool = opt(True, "feed detector structure tokens into the prompt")


@dataclass
class SFTConfig:
    lr: float = opt(1e-3, "peak AdamW learning rate")
    steps: int = opt(300, "optimizer steps")
    batch_size: int = opt(8, "studies per step (global)")
    warmup: int = opt(20, "linear warm-up steps")
    grad_clip: float = opt(1.0, "max gradient norm")
    save_every: int = opt(100, "checkpoint every N steps")
    seed: int = opt(0, "random seed")
