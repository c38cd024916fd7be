"""GRPO bookkeeping: per-study groups, reward columns, config checks, metrics, DDP reductions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from echosonar.config.grpo import GRPOConfig
from echosonar.reason.grpo_loss import LOSS_TYPES, SCALES
from echosonar.reason.rewards import parse
from echosonar.schema import StudyFeatures


@dataclass
class Group:
    """The G completions of one study: ``ids``/``mask`` ``[G, T]``, ``rewards`` ``[G]``."""

    study: StudyFeatures
    ids: Tensor
    mask: Tensor
    texts: list[str]
    truncated: Tensor
    rewards: Tensor
    per_reward: dict[str, list[float | None]]

    @property
    def zero_std(self) -> bool:
        return bool(self.rewards.numel() < 2 or torch.isclose(self.rewards.std(), torch.zeros(())))


def study_columns(studies: Sequence[StudyFeatures], g: int) -> dict[str, list[Any]]:
    """Reward columns (``labels``, ``report``, ``boxes``, ``citations`` (what the prompt shows,
    ``reason.grounding.prompt_citations``), ``key``), each repeated G times."""
    from echosonar.reason.grounding import prompt_citations

    cols: dict[str, list[Any]] = {"key": [], "labels": [], "report": [], "boxes": [],
                                  "citations": []}
    for sf in studies:
        boxes = {v.view: dict(v.boxes) for v in sf.views}
        shown = prompt_citations(sf)
        for _ in range(g):
            cols["citations"].append(shown)
            cols["key"].append(sf.key)
            cols["labels"].append(sf.labels)
            cols["report"].append(sf.report)
            cols["boxes"].append(boxes)
    return cols


def pad_stack(tensors: Sequence[Tensor], value: int) -> Tensor:
    """Right-pad ``[n_i, T_i]`` tensors to the longest T and concatenate along rows."""
    t = max(x.shape[1] for x in tensors)
    return torch.cat([nn.functional.pad(x, (0, t - x.shape[1]), value=value) for x in tensors])


def check_config(cfg: GRPOConfig, world: int = 1) -> None:
    """Raise ``ValueError`` naming the bad field."""
    if cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"grpo.loss_type must be one of {LOSS_TYPES}, got {cfg.loss_type!r}")
    if cfg.scale_rewards not in SCALES:
        raise ValueError(f"grpo.scale_rewards must be one of {SCALES}, got {cfg.scale_rewards!r}")
    if cfg.zero_std not in ("keep", "drop", "resample"):
        raise ValueError(f"grpo.zero_std must be keep, drop or resample, got {cfg.zero_std!r}")
    if cfg.group_size < 2:
        raise ValueError("grpo.group_size must be >= 2 (advantages compare completions)")
    if cfg.studies_per_step % world:
        raise ValueError(f"grpo.studies_per_step={cfg.studies_per_step} is not divisible by "
                         f"{world} processes")
    for name in ("num_iterations", "micro_batch_studies", "max_completion_length", "steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"grpo.{name} must be >= 1")



def reward_metrics(groups: list[Group], zstats: dict[str, float], world: int = 1) -> dict[str, Any]:
    """Per-reward mean/std, total reward, zero-std fractions, lengths, well-formed rate."""
    names = sorted(groups[0].per_reward)
    sums: list[float] = []
    for n in names:
        v = torch.tensor([x for gr in groups for x in gr.per_reward[n] if x is not None],
                         dtype=torch.float64)
        sums += [float(v.sum()), float((v ** 2).sum()), float(v.numel())]
    r = torch.cat([gr.rewards for gr in groups]).double()
    lens = torch.cat([gr.mask.sum(-1) for gr in groups]).double()
    wf = [float(parse(t).well_formed) for gr in groups for t in gr.texts]
    trunc = torch.cat([gr.truncated for gr in groups]).double()
    grp_std = torch.stack([gr.rewards.std() for gr in groups]).double()
    sums += [float(r.sum()), float((r ** 2).sum()), float(r.numel()), float(grp_std.sum()),
             float(len(groups)), float(sum(gr.zero_std for gr in groups)),
             zstats["zero_std_initial"], zstats["groups_initial"], zstats["resampled"],
             float(lens.sum()), sum(wf), float(trunc.sum())]
    s = all_reduce(torch.tensor(sums, dtype=torch.float64), world).tolist()
    lo = all_reduce(lens.min().reshape(1), world, "min").item()
    hi = all_reduce(lens.max().reshape(1), world, "max").item()
    out: dict[str, Any] = {}
    for i, n in enumerate(names):
        a, b, c = s[3 * i:3 * i + 3]
        out[f"rewards/{n}/mean"] = a / c if c else None
        out[f"rewards/{n}/std"] = math.sqrt(max(b - a * a / c, 0) / (c - 1)) if c > 1 else None
    (a, b, c, gstd, ng, zf, zi, gi, rs, ls, wfs, tr) = s[3 * len(names):]
    out.update({"reward": a / c, "reward_std": math.sqrt(max(b - a * a / c, 0) / (c - 1)),
                "reward_group_std": gstd / ng, "frac_zero_std": zi / gi,
                "frac_zero_std_final": zf / ng, "resampled": rs,
                "completion_length": ls / c, "completion_length_min": lo,
                "completion_length_max": hi, "well_formed": wfs / c, "truncated": tr / c})
    return out



# ---------------------------------------------------------------------------------------------
# Distributed helpers (no-ops on one process)
# ---------------------------------------------------------------------------------------------

def all_reduce(x: Tensor, world: int, op: str = "sum") -> Tensor:
    """``x`` reduced over DDP ranks (``op``: sum, min or max); ``x`` itself on one process."""
    if world == 1:
        return x
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    # nccl reduces CUDA tensors only; gloo takes CPU tensors
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    y = x.detach().to(dev).clone()
    dist.all_reduce(y, op=ops[op])
    return y.to(x.device)


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


class null_context:
    """``contextlib.nullcontext`` look-alike (DDP's ``no_sync`` stand-in)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


