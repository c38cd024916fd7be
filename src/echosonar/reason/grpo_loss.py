"""GRPO maths: group-normalised advantages, clipped-ratio loss, k3 KL, loss normalisations.

Follows DeepSeekMath (Shao et al., 2024) and TRL's ``GRPOTrainer``:

- advantage ``A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)``; ``scale="batch"`` divides by
  the std over the whole batch instead, ``"none"`` does not divide (Dr. GRPO);
- per-token loss ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A) + beta * KL`` with
  ``rho = exp(logp - logp_old)`` and the k3 estimator
  ``KL = exp(logp_ref - logp) - (logp_ref - logp) - 1``;
- normalisation ``grpo``: mean over each sequence's tokens, then over sequences; ``dapo``: sum
  over all tokens of the batch / number of tokens in the batch; ``dr_grpo``: sum /
  (sequences x max_completion_length).

The trainer processes a batch in chunks (and over DDP ranks), so :func:`per_token_loss` and
:func:`reduce_loss` take the normaliser of the WHOLE batch explicitly; :func:`grpo_loss` is the
one-chunk convenience used by tests and small callers.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALES = ("group", "batch", "none")
STD_EPS = 1e-4


def group_advantages(rewards: Tensor, group_size: int,
                     scale: str = "group") -> tuple[Tensor, Tensor]:
    """Advantages for rewards ``[N]`` grouped in consecutive blocks of ``group_size``.

    Returns ``(advantages [N], zero_std [N // group_size] bool)``. The std is the unbiased one
    (as ``torch.std`` and TRL); a group whose rewards are all equal has ``zero_std`` True and
    advantages exactly 0.

    >>> a, z = group_advantages(torch.tensor([1., 0., 1., 0., 2., 2.]), 2)
    >>> [round(x, 3) for x in a.tolist()], z.tolist()
    ([0.707, -0.707, 0.707, -0.707, 0.0, 0.0], [False, False, True])
    """
    if scale not in SCALES:
        raise ValueError(f"scale_rewards must be one of {SCALES}, got {scale!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(-1, keepdim=True)
    std = grouped.std(-1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    zero_std = torch.isclose(std.squeeze(-1), torch.zeros_like(std.squeeze(-1)))
    adv = grouped - mean
    if scale == "group":
        adv = adv / (std + STD_EPS)
    elif scale == "batch":
        adv = adv / (rewards.std() + STD_EPS) if rewards.numel() > 1 else adv
    return adv.reshape(-1), zero_std


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(d) - d - 1``, ``d = ref - logp``.

    Zero where the two agree, non-negative everywhere.

    >>> k3_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0])).tolist()[0]
    0.0
    """
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def per_token_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, *, epsilon: float = 0.2,
                   epsilon_high: float | None = None, beta: float = 0.0,
                   ref_logps: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (+ KL) per token.

    Args:
        logps, old_logps: ``[N, T]`` current and behaviour-policy log-probs (old is detached).
        advantages: ``[N]``.
        epsilon, epsilon_high: ratio clip ``[1 - epsilon, 1 + epsilon_high]`` (high defaults to
            epsilon).
        beta, ref_logps: KL weight and reference log-probs ``[N, T]`` (needed when beta > 0).

    Returns ``(loss [N, T], parts)`` with ``parts`` = ``ratio``, ``low_clipped``,
    ``high_clipped`` (bool, TRL's definitions) and ``kl`` (when ``ref_logps`` is given).
    """
    eps_high = epsilon if epsilon_high is None or epsilon_high <= 0 else epsilon_high
    adv = advantages.unsqueeze(-1)
    ratio = torch.exp(logps - old_logps.detach())
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    loss = -torch.min(ratio * adv, clipped * adv)
    parts: dict[str, Tensor] = {
        "ratio": ratio.detach(),
        "low_clipped": (ratio < 1 - epsilon) & (adv < 0),
        "high_clipped": (ratio > 1 + eps_high) & (adv > 0),
    }
    if ref_logps is not None:
        kl = k3_kl(logps, ref_logps.detach())
        parts["kl"] = kl.detach()
        if beta != 0.0:
            loss = loss + beta * kl
    elif beta != 0.0:
        raise ValueError("beta > 0 needs ref_logps")
    return loss, parts


def loss_normalizer(loss_type: str, completion_mask: Tensor, max_completion_length: int) -> float:
    """The denominator of the whole batch for :func:`reduce_loss` (``completion_mask [N, T]``):
    sequences (``grpo``), tokens (``dapo``) or sequences x max length (``dr_grpo``)."""
    n = completion_mask.shape[0]
    if loss_type == "grpo":
        return float(n)
    if loss_type == "dapo":
        return float(completion_mask.sum().clamp(min=1).item())
    if loss_type == "dr_grpo":
        return float(n * max_completion_length)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def reduce_loss(loss: Tensor, completion_mask: Tensor, loss_type: str, normalizer: float) -> Tensor:
    """This chunk's share of the batch loss: ``[N, T] -> scalar``. Summing the shares of all
    chunks (and ranks) gives the batch loss, whatever the chunking."""
    m = completion_mask.to(loss.dtype)
    if loss_type == "grpo":
        per_seq = (loss * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum() / normalizer
    if loss_type in ("dapo", "dr_grpo"):
        return (loss * m).sum() / normalizer
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def grpo_loss(logps: Tensor, old_logps: Tensor, advantages: Tensor, completion_mask: Tensor, *,
              loss_type: str = "dapo", epsilon: float = 0.2, epsilon_high: float | None = None,
              beta: float = 0.0, ref_logps: Tensor | None = None,
              max_completion_length: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """The GRPO loss of one batch held in memory, with TRL's metrics.

    Returns ``(loss, metrics)``; ``metrics`` has ``kl`` (if ``ref_logps``), ``clip_low``,
    ``clip_high``, ``clip_region`` (token fractions) and ``ratio_mean``.
    """
    loss, parts = per_token_loss(logps, old_logps, advantages, epsilon=epsilon,
                                 epsilon_high=epsilon_high, beta=beta, ref_logps=ref_logps)
    max_len = max_completion_length or completion_mask.shape[1]
    norm = loss_normalizer(loss_type, completion_mask, max_len)
    total = reduce_loss(loss, completion_mask, loss_type, norm)
    m = completion_mask.float()
    count = m.sum().clamp(min=1.0)

    def tok_mean(x: Tensor) -> float:
        return float((x.float() * m).sum() / count)

    metrics = {"clip_low": tok_mean(parts["low_clipped"]),
               "clip_high": tok_mean(parts["high_clipped"]),
               "clip_region": tok_mean(parts["low_clipped"] | parts["high_clipped"]),
               "ratio_mean": tok_mean(parts["ratio"])}
    if "kl" in parts:
        metrics["kl"] = tok_mean(parts["kl"])
    return total, metrics
