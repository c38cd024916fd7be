"""Language-model, SFT and GRPO configs (owned by the reason stage)."""

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
