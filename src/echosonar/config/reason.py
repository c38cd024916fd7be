"""Language-model and SFT configs (owned by the reason stage: model + SFT)."""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt


@dataclass
class LMConfig:
    arch: str = opt("llama", "from-scratch decoder: llama or qwen2 (HF ...ForCausalLM)")
    hidden_size: int = opt(192, "LM hidden width (from-scratch model)")
    layers: int = opt(4, "decoder layers (from-scratch model)")
    heads: int = opt(4, "attention heads")
    kv_heads: int = opt(0, "key/value heads for grouped-query attention (0 = heads)")
    intermediate_size: int = opt(0, "MLP width (0 = 8/3 x hidden, rounded up to 64)")
    vocab_size: int = opt(2048, "BPE vocabulary size trained on the corpus")
    max_len: int = opt(2048, "maximum sequence length, prompt + completion (6 views + a "
                             "full target is ~1,300-1,600 tokens)")
    rope_theta: float = opt(10000.0, "RoPE base")
    tie_embeddings: bool = opt(True, "tie input embeddings and LM head (from-scratch model)")
    init_std: float = opt(0.02, "weight init std (from-scratch model)")
    attn_implementation: str = opt("sdpa", "HF attention kernel: sdpa or eager")
    tokenizer: str = opt("", "tokenizer folder (tokenizer.json); empty = train BPE on the "
                             "train split's targets and prompt text")
    base_model: str = opt("", "optional local HF causal-LM directory to fine-tune with LoRA")
    lora_r: int = opt(16, "LoRA rank (base_model only)")
    lora_alpha: int = opt(32, "LoRA alpha (base_model only)")
    lora_dropout: float = opt(0.05, "LoRA dropout (base_model only)")
    lora_targets: list[str] = opt(["q_proj", "k_proj", "v_proj", "o_proj"],
                                  "module names LoRA adapts (base_model only)")
    use_structure_tokens: bool = opt(True, "feed detector structure tokens into the prompt (and "
                                           "the box/measurement text); false = ablation row")
    max_clip_tokens: int = opt(0, "clip tokens kept per view: global + pooled space-time "
                                  "tokens (0 = all 1+N)")
    measurement_flags: bool = opt(True, "print a reference-range flag after each detector "
                                       "measurement past a finding's cut-off (e.g. 'tr_jet_ratio "
                                       "0.36 (past the tricuspid regurgitation cut-off)'); the "
                                       "evidence targets cite it, so the step from number to "
                                       "finding is written out (chosen on val 2026-12-06, "
                                       "docs/notes/reason.md)")
    view_segments: bool = opt(True, "add a learned per-view segment embedding to every prompt "
                                     "token of a view's block (its header, clip and structure "
                                     "tokens, boxes and measurements), so a reasoning line can "
                                     "find the block it cites from (reason.model)")
    copy_head: bool = opt(True, "a pointer over the prompt's text tokens mixed into the "
                                "next-token distribution, so the LM can copy the detector's "
                                "boxes and measurements it cites (reason.copy_head; chosen on "
                                "val 2026-12-06 at 900 SFT steps: 96.8 % of citations exact "
                                "against 8.8 % without it, macro BAcc within the CI, "
                                "docs/notes/reason.md)")
    copy_follow: bool = opt(True, "copy head only: a learned bonus for the prompt slot right "
                                   "after the one the pointer read one or two tokens ago "
                                   "(CopyNet's selective read)")
    copy_tokens: str = opt("evidence", "copy head only: what the pointer may copy -- "
                                       "'evidence' (every token of each view's boxes and "
                                       "measurements text, names included, so a citation is "
                                       "read off the prompt whole) or 'numbers' (digit tokens "
                                       "only; the generator writes the names)")
    copy_answer: bool = opt(False, "copy head only: the pointer also reads the completion's "
                                   "own reasoning, so the answer's findings can be copied from "
                                   "the findings the reasoning lines concluded "
                                   "(reason.answer_copy)")
    copy_answer_slots: str = opt("mentions", "copy_answer only: which reasoning tokens the "
                                             "answer may read -- 'mentions' (every finding "
                                             "name as it is written) or 'first' (each finding "
                                             "once, at its first mention, when its item ends)")
    aux_weight: float = opt(1.0, "weight of the per-label BCE loss of the auxiliary head")
    measurement_head: bool = opt(True, "add a linear head on the detector's measurements as "
                                       "numbers (standardised per view and quantity) to the "
                                       "hidden-state label head (reason.measure_head)")


@dataclass
class SFTConfig:
    lr: float = opt(1.5e-3, "peak AdamW learning rate")
    min_lr_ratio: float = opt(0.1, "cosine decays to lr x this")
    weight_decay: float = opt(0.05, "AdamW weight decay (matrices only)")
    steps: int = opt(900, "optimizer steps (900: every val measure was still rising at 300 "
                          "and 600; about 45 min on one CPU thread with sft.precision=bf16)")
    batch_size: int = opt(8, "studies per step (global, over all DDP ranks)")
    micro_batch_size: int = opt(0, "studies per forward pass per rank (0 = the whole per-rank "
                                   "batch); gradients accumulate")
    warmup: int = opt(20, "linear warm-up steps")
    grad_clip: float = opt(1.0, "max gradient norm")
    save_every: int = opt(100, "checkpoint every N steps")
    eval_every: int = opt(50, "validation loss every N steps (0 = only at the end)")
    val_studies: int = opt(32, "validation studies used for the loss (0 = all)")
    log_every: int = opt(10, "train-loss JSONL line every N steps")
    sample_every: int = opt(100, "log greedy sample generations every N steps (0 = never)")
    samples: int = opt(2, "validation studies whose generations are logged")
    max_new_tokens: int = opt(1280, "generation budget for logged samples")
    device: str = opt("auto", "auto, cpu or cuda[:i] (auto = CUDA when present)")
    threads: int = opt(2, "torch CPU threads per process (0 = torch default)")
    precision: str = opt("fp32", "CPU matrix products: 'fp32', or 'bf16' (autocast: products in "
                                 "bfloat16, weights, optimizer and losses in fp32; 1.85x the "
                                 "default model's step on a CPU with AVX512-BF16, same losses "
                                 "to 0.1 %: docs/bench/sft.md). CUDA always autocasts to bf16")
    seed: int = opt(0, "random seed")
    balance: float = opt(0.0, "class-balanced sampling: a study is drawn with probability "
                              "~ (1/prevalence)^balance of its rarest positive label (0 = each "
                              "study once per epoch); counters greedy under-calling of rare "
                              "findings")
    finding_weight: float = opt(1.0, "loss weight of target tokens that state a finding (a "
                                     "reasoning line's evidence onwards when its findings are "
                                     "not 'none', the answer's findings line unless healthy)")
    copy_loss_weight: float = opt(0.3, "weight of the copy head's own loss (-log p_copy of "
                                       "target tokens found in the prompt); 0 trains the "
                                       "pointer through the mixture only (lm.copy_head models; "
                                       "1.0 broke the format on val, 0.3 chosen)")
    target: str = opt("evidence", "who writes the reasoning lines of the targets: 'evidence' "
                                  "(cite the prompt's detector boxes and measurements, "
                                  "reason.evidence_targets), 'reference' (the cache's reasoning, "
                                  "written by the simulator from its ground truth) or 'copy' "
                                  "(the copy probe: repeat the prompt's evidence, decide nothing)")
    report: str = opt("labels", "who writes the report of an evidence target: 'labels' (every "
                                "section templated from the target's findings, so the report "
                                "follows from the answer) or 'reference' (the study's stored "
                                "report text)")
    refit_heads: bool = opt(True, "after the last step, refit the label heads on the frozen LM "
                                  "(reason.head_fit, settings in 'head') before writing "
                                  "RUN/model; the checkpoint keeps the jointly trained heads")


@dataclass
class HeadFitConfig:
    epochs: int = opt(400, "full-batch AdamW epochs over the pooled prompt states")
    lr: float = opt(1e-2, "AdamW learning rate")
    weight_decay: float = opt(0.1, "AdamW weight decay")
    eval_every: int = opt(10, "val BCE every N epochs; the best epoch's weights are kept")
    fit_hidden: bool = opt(False, "also refit the hidden-state head (off: the LM has seen the "
                                  "training prompts, so a refitted head overfits them; see "
                                  "reason.head_fit)")
