"""GRPO config (owned by the reason stage: GRPO).

Names follow TRL's ``GRPOConfig`` where the meaning is the same (``num_iterations`` is μ,
``epsilon_high`` is DAPO's clip-higher, ``scale_rewards`` is group/batch/none), so settings carry
over between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

from echosonar.config.base import opt

#: Default reward weights; names are keys of ``echosonar.reason.rewards.REWARDS``.
#: Classification is the class-balanced per-label reward alone: the paper's set IoU counts
#: ``healthy`` as a finding and pays a constant "healthy" on the common healthy studies, which is
#: how 30 steps collapsed an SFT model toward it (docs/notes/grpo.md); a correct rare positive
#: earns as much as the common negatives under the balanced weights. ``citation`` checks every
#: cited box and number against the prompt verbatim.
DEFAULT_REWARD_WEIGHTS: dict[str, float] = {
    "format": 1.0,
    "classification_balanced": 2.0,
    "report": 1.0,
    "box_grounding": 0.25,
    "citation": 0.5,
    "agreement": 0.5,
    "length": 0.5,
}


@dataclass
class GRPOConfig:
    # optimisation
    lr: float = opt(5e-5, "AdamW learning rate (constant after warm-up)")
    warmup: int = opt(0, "linear warm-up, in optimizer updates")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    grad_clip: float = opt(1.0, "max gradient norm (0 disables clipping)")
    steps: int = opt(50, "GRPO steps; each samples a fresh batch and makes num_iterations updates")
    num_iterations: int = opt(1, "mu: policy updates per sampled batch (old log-probs are stored)")
    studies_per_step: int = opt(4, "studies (prompts) per step, global over DDP ranks")
    micro_batch_studies: int = opt(2, "studies per forward/backward chunk (memory knob only)")
    # sampling
    group_size: int = opt(8, "completions sampled per study (G)")
    temperature: float = opt(1.0, "sampling temperature (log-probs use the same)")
    top_p: float = opt(1.0, "nucleus sampling mass (1 = off)")
    max_completion_length: int = opt(1280, "max new tokens per completion (six-view targets: "
                                     "~750 tokens, at most ~1,060)")
    # loss
    beta: float = opt(0.0, "k3 KL weight to the frozen SFT model; 0 keeps no reference")
    epsilon: float = opt(0.2, "clip range of the importance ratio")
    epsilon_high: float = opt(0.28, "upper clip range (DAPO clip-higher: lets rare good tokens "
                                    "grow, against entropy collapse); 0 means the same as epsilon")
    loss_type: str = opt("dapo", "loss normalisation: grpo, dapo or dr_grpo")
    scale_rewards: str = opt("group", "advantage scaling by reward std: group, batch or none")
    zero_std: str = opt("keep", "groups with identical rewards: keep, drop or resample")
    resample_tries: int = opt(2, "with zero_std=resample: redraw rounds per step")
    # rewards
    reward_mode: str = opt("paper", "combine rewards: paper (format x correctness + bonuses) "
                           "or sum (weighted sum)")
    reward_weights: dict[str, float] = opt(dict(DEFAULT_REWARD_WEIGHTS),
                                           "weight per reward name (0 disables one)")
    length_buffer: int = opt(64, "soft overlong penalty ramps over the last N tokens")
    short_fraction: float = opt(0.5, "report shorter than this fraction of the reference is "
                                "penalised")
    # bookkeeping
    device: str = opt("auto", "auto, cpu or cuda[:i] (auto = CUDA when present)")
    threads: int = opt(2, "torch CPU threads per process (0 = torch default)")
    save_every: int = opt(25, "checkpoint every N steps (and at the end)")
    eval_every: int = opt(0, "greedy macro-BAcc on the val split every N steps (0 = off)")
    eval_studies: int = opt(32, "val studies used by eval_every")
    seed: int = opt(0, "random seed")
