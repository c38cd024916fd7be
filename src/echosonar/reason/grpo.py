"""The GRPO training loop (DeepSeekMath Algorithm 1, TRL's options), owned by EchoSonar because
TRL's ``GRPOTrainer`` cannot feed video features.

One step: take ``studies_per_step`` studies (a pure function of ``(seed, step)``, split over DDP
ranks), sample G completions each (:mod:`echosonar.reason.rollout`, prompt prefilled once),
score them (:mod:`echosonar.reason.rewards`), turn group-normalised rewards into advantages,
optionally resample or drop groups whose rewards are all equal, store old-policy log-probs when
``num_iterations`` (μ) > 1 and reference log-probs when β > 0, then make μ AdamW updates of the
clipped-ratio loss (:mod:`echosonar.reason.grpo_loss`). Dropout is off throughout (as in TRL),
so with μ = 1 the ratio is exactly 1.

Randomness is re-derived from ``(seed, step, rank, attempt)`` at every step, so a resumed run
continues exactly as an uninterrupted one. Run folder::

    RUN/config.yaml, RUN/run_info.json    resolved config, provenance
    RUN/log.jsonl                         one line of metrics per step
    RUN/checkpoint/                       policy (save_pretrained) + training state, for --resume
    RUN/final/                            the trained policy
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from echosonar.config.grpo import GRPOConfig
from echosonar.reason.grpo_loss import STD_EPS, group_advantages, per_token_loss, reduce_loss
from echosonar.reason.grpo_utils import (
    Group,
    all_reduce,
    barrier,
    check_config,
    null_context,
    pad_stack,
    reward_metrics,
    study_columns,
)
from echosonar.reason.rewards import REWARDS, compute_rewards, label_prevalence
from echosonar.reason.rollout import GRPOPolicy, completion_logps, rollout
from echosonar.schema import StudyFeatures

LOG = "log.jsonl"
CKPT = "checkpoint"
FINAL = "final"


def policy_logps(policy: nn.Module, studies: list[StudyFeatures], ids: Tensor, mask: Tensor,
                 g: int, temperature: float, with_entropy: bool = False
                 ) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs ``[B*G, T]`` (and entropies) of ``policy``'s completions ``ids`` of
    ``studies`` (G rows per study), under the distribution the rollouts sample from: with a copy
    head its mixture -- scoring the generator alone would leave the pointer and its gate out of
    the policy gradient -- else the LM's logits with the prompt run once per study."""
    if getattr(policy, "copy_head", None) is not None:
        out = policy.completion_logprobs(studies, ids, mask, temperature, with_entropy)
        return out if with_entropy else (out, None)
    embeds, pmask = policy.prompt_embeds(studies)
    return completion_logps(policy.lm, embeds, pmask, ids, mask, g, temperature, with_entropy)


class _LogpModule(nn.Module):
    """Wraps the policy so one ``forward`` (what DDP hooks) yields completion log-probs."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, studies: list[StudyFeatures], ids: Tensor, mask: Tensor, g: int,
                temperature: float, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
        return policy_logps(self.policy, studies, ids, mask, g, temperature, with_entropy)


class GRPOTrainer:
    """Train ``policy`` (a :class:`GRPOPolicy`) on ``train`` studies; writes into ``out``.

    ``reward_funcs`` adds custom rewards (name -> callable) to ``rewards.REWARDS``;
    ``cfg.reward_weights`` picks and weighs them. ``rank``/``world`` come from an initialised
    process group (see ``reason.sft.setup_distributed``); ``val`` feeds ``cfg.eval_every``.
    """

    def __init__(self, policy: nn.Module, cfg: GRPOConfig, train: list[StudyFeatures],
                 out: str | Path, *, reward_funcs: dict[str, Callable[..., list]] | None = None,
                 val: list[StudyFeatures] | None = None, rank: int = 0, world: int = 1,
                 device: str | torch.device = "cpu") -> None:
        check_config(cfg, world)
        if not train:
            raise ValueError("GRPO needs at least one training study")
        self.cfg, self.studies, self.val = cfg, list(train), list(val or [])
        self.out, self.rank, self.world = Path(out), rank, world
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()  # dropout off for rollouts and updates
        self.reference = None
        if cfg.beta != 0.0:  # frozen copy of the starting (SFT) weights
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        self.module: nn.Module = _LogpModule(self.policy)
        if world > 1:  # a policy may hold parameters GRPO never uses (EchoSonarR's label head)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.module = nn.parallel.DistributedDataParallel(
                self.module, device_ids=ids, find_unused_parameters=True)
        self.params = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([p for _, p in self.params], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        warm = max(cfg.warmup, 0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda u: min(1.0, (u + 1) / (warm + 1)) if warm else 1.0)
        self.reward_funcs = reward_funcs or {}
        known = set(REWARDS) | set(self.reward_funcs)
        unknown = sorted(k for k, w in cfg.reward_weights.items() if w and k not in known)
        if unknown or not any(cfg.reward_weights.values()):
            raise ValueError(f"grpo.reward_weights: unknown reward(s) {unknown} or all weights "
                             f"zero; known rewards: {sorted(known)}")
        self.prevalence = label_prevalence([s.labels for s in self.studies if s.labels])
        self.step = 0
        self.log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ data and sampling
    def _indices(self, step: int) -> list[int]:
        from echosonar.reason.data import batch_indices

        return batch_indices(len(self.studies), self.cfg.studies_per_step, step, self.cfg.seed,
                             self.rank, self.world)

    def _generator(self, step: int, attempt: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(((self.cfg.seed * 1_000_003 + step) * 1009 + self.rank) * 31 + attempt)
        return g

    def _sample(self, studies: list[StudyFeatures], gen: torch.Generator,
                times: dict[str, float]) -> list[Group]:
        cfg, g = self.cfg, self.cfg.group_size
        t0 = time.perf_counter()
        chunks = []
        for i in range(0, len(studies), cfg.micro_batch_studies):
            chunk = studies[i:i + cfg.micro_batch_studies]
            chunks.append(rollout(self.policy, chunk, num_samples=g,
                                  max_new_tokens=cfg.max_completion_length,
                                  temperature=cfg.temperature, top_p=cfg.top_p, generator=gen))
        t1 = time.perf_counter()
        texts = [t for r in chunks for t in r.texts]
        lengths = torch.cat([r.lengths for r in chunks]).tolist()
        truncated = torch.cat([r.truncated for r in chunks]).tolist()
        cols = study_columns(studies, g)
        total, per = compute_rewards(
            texts, cfg.reward_weights, cfg.reward_mode, self.reward_funcs, **cols,
            completion_lengths=lengths, truncated=truncated,
            max_completion_length=cfg.max_completion_length, length_buffer=cfg.length_buffer,
            short_fraction=cfg.short_fraction, label_prevalence=self.prevalence)
        times["rollout"] += t1 - t0
        times["reward"] += time.perf_counter() - t1
        groups, k = [], 0
        for r in chunks:
            for j in range(r.completion_ids.shape[0] // g):
                sl = slice(j * g, (j + 1) * g)
                rows = slice(k, k + g)
                groups.append(Group(studies[k // g], r.completion_ids[sl], r.completion_mask[sl],
                                    r.texts[sl], r.truncated[sl],
                                    torch.tensor(total[rows], dtype=torch.float32),
                                    {n: v[rows] for n, v in per.items()}))
                k += g
        return groups

    def _collect(self, step: int, times: dict[str, float]) -> tuple[list[Group], dict[str, float]]:
        cfg = self.cfg
        studies = [self.studies[i] for i in self._indices(step)]
        groups = self._sample(studies, self._generator(step, 0), times)
        stats = {"zero_std_initial": float(sum(gr.zero_std for gr in groups)),
                 "groups_initial": float(len(groups)), "resampled": 0.0}
        if cfg.zero_std == "resample":
            for attempt in range(1, cfg.resample_tries + 1):
                bad = [i for i, gr in enumerate(groups) if gr.zero_std]
                if not bad:
                    break
                gen = self._generator(step, attempt)
                pick = torch.randint(len(self.studies), (len(bad),), generator=gen,
                                     device=self.device).tolist()
                fresh = self._sample([self.studies[i] for i in pick], gen, times)
                for i, gr in zip(bad, fresh, strict=True):
                    if not gr.zero_std:
                        groups[i] = gr
                        stats["resampled"] += 1
        return groups, stats

    # ------------------------------------------------------------------ log-probs
    def _chunks(self, groups: list[Group]) -> list[tuple[list[Group], slice]]:
        m, g = self.cfg.micro_batch_studies, self.cfg.group_size
        return [(groups[i:i + m], slice(i * g, (i + len(groups[i:i + m])) * g))
                for i in range(0, len(groups), m)]

    @torch.no_grad()
    def _frozen_logps(self, model: nn.Module, groups: list[Group], ids: Tensor,
                      mask: Tensor) -> Tensor:
        out = []
        for chunk, rows in self._chunks(groups):
            lp, _ = policy_logps(model, [gr.study for gr in chunk], ids[rows], mask[rows],
                                 self.cfg.group_size, self.cfg.temperature)
            out.append(lp)
        return torch.cat(out)

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, Any]:
        """Sample, score and update; returns this step's metrics (reduced over ranks)."""
        cfg, g = self.cfg, self.cfg.group_size
        times = {"rollout": 0.0, "reward": 0.0, "old_logp": 0.0, "ref_logp": 0.0, "update": 0.0}
        t_start = time.perf_counter()
        groups, zstats = self._collect(step, times)
        rewards = torch.cat([gr.rewards for gr in groups])
        adv, zero = group_advantages(rewards, g, "none" if cfg.scale_rewards == "batch"
                                     else cfg.scale_rewards)
        if cfg.scale_rewards == "batch":  # std over the GLOBAL batch
            s = all_reduce(torch.stack([rewards.sum(), (rewards ** 2).sum(),
                                      torch.tensor(float(rewards.numel()))]).double(), self.world)
            var = (s[1] - s[0] ** 2 / s[2]) / (s[2] - 1).clamp(min=1)
            adv = adv / (var.clamp(min=0).sqrt().float() + STD_EPS)
        weight = torch.ones(len(groups))
        reward_groups = groups
        if cfg.zero_std == "drop":
            keep = [i for i in range(len(groups)) if not zero[i]]
            if not keep:  # stay in step with the other DDP ranks: one group, zero weight
                keep, weight = [0], torch.zeros(1)
            else:
                weight = torch.ones(len(keep))
            adv = adv.view(-1, g)[keep].reshape(-1)
            groups = [groups[i] for i in keep]
        ids = pad_stack([gr.ids for gr in groups], self.policy.tokenizer.pad_token_id)
        mask = pad_stack([gr.mask for gr in groups], 0)
        ids, mask, adv = ids.to(self.device), mask.to(self.device), adv.to(self.device)
        loss_mask = mask * weight.repeat_interleave(g).to(self.device)[:, None]
        old = ref = None
        t0 = time.perf_counter()
        if cfg.num_iterations > 1:
            old = self._frozen_logps(self.policy, groups, ids, mask)
        times["old_logp"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.reference is not None:
            ref = self._frozen_logps(self.reference, groups, ids, mask)
        times["ref_logp"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        n_seq = all_reduce(torch.tensor([float((weight > 0).sum() * g),
                                       float(loss_mask.sum())]), self.world)
        norm = {"grpo": n_seq[0], "dapo": n_seq[1].clamp(min=1),
                "dr_grpo": n_seq[0] * cfg.max_completion_length}[cfg.loss_type]
        norm = max(float(norm), 1.0)
        acc = torch.zeros(8, dtype=torch.float64)
        for _ in range(cfg.num_iterations):
            self.opt.zero_grad(set_to_none=True)
            chunks = self._chunks(groups)
            for ci, (chunk, rows) in enumerate(chunks):
                sync = ci == len(chunks) - 1 or self.world == 1
                ctx = self.module.no_sync() if not sync else null_context()
                with ctx:
                    lp, ent = self.module([gr.study for gr in chunk], ids[rows], mask[rows], g,
                                          cfg.temperature, True)
                    old_c = lp.detach() if old is None else old[rows]
                    loss, parts = per_token_loss(
                        lp, old_c, adv[rows], epsilon=cfg.epsilon,
                        epsilon_high=cfg.epsilon_high or None, beta=cfg.beta,
                        ref_logps=None if ref is None else ref[rows])
                    share = reduce_loss(loss, loss_mask[rows], cfg.loss_type, norm) * self.world
                    share.backward()
                m = mask[rows].double()
                acc += torch.stack([
                    share.detach().double() / self.world, m.sum(),
                    (parts["low_clipped"] * m).sum(), (parts["high_clipped"] * m).sum(),
                    ((parts["low_clipped"] | parts["high_clipped"]) * m).sum(),
                    (ent.double() * m).sum(), (parts["ratio"].double() * m).sum(),
                    (parts["kl"].double() * m).sum() if "kl" in parts else torch.zeros(())
                    .double()])
            gn = torch.nn.utils.clip_grad_norm_([p for _, p in self.params],
                                                cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            self.opt.step()
            self.sched.step()
        times["update"] = time.perf_counter() - t0
        acc = all_reduce(acc, self.world)
        tok = float(acc[1].clamp(min=1))
        metrics: dict[str, Any] = {
            "step": step + 1, "lr": self.sched.get_last_lr()[0], "loss": float(acc[0]) /
            cfg.num_iterations, "grad_norm": float(gn),
            "clip_low": float(acc[2]) / tok, "clip_high": float(acc[3]) / tok,
            "clip_region": float(acc[4]) / tok, "entropy": float(acc[5]) / tok,
            "ratio_mean": float(acc[6]) / tok,
            "kl": float(acc[7]) / tok if ref is not None else None}
        metrics.update(reward_metrics(reward_groups, zstats, self.world))
        metrics.update({f"time/{k}": v for k, v in times.items()})
        metrics["time/step"] = time.perf_counter() - t_start
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> None:
        """Rank 0 writes RUN/checkpoint (policy + optimizer + step) atomically."""
        from echosonar.io.atomic import atomic_dir
        from echosonar.io.checkpoint import save_training_state

        if self.rank == 0:
            with atomic_dir(self.out / CKPT) as tmp:
                self.policy.save_pretrained(tmp, meta={"grpo_step": step})
                save_training_state(tmp, self.opt, self.sched, step,
                                    extra={"log_lines": len(self.log)},
                                    extra_tensors={f"param.{n}": p.detach().clone()
                                                   for n, p in self.params})
        barrier(self.world)

    def load(self) -> int:
        """Restore RUN/checkpoint into this trainer; returns the step to continue from."""
        from echosonar.io.checkpoint import CheckpointError, load_training_state

        d = self.out / CKPT
        meta = load_training_state(d, self.opt, self.sched)
        params = meta["extra_tensors"]
        with torch.no_grad():
            for n, p in self.params:
                if f"param.{n}" not in params:
                    raise CheckpointError(f"{d}: training state lacks parameter {n!r} (was the "
                                          "run started from another model?)")
                p.copy_(params[f"param.{n}"].to(p.device))
        self.step = int(meta["step"])
        log_path = self.out / LOG
        if log_path.is_file():
            lines = log_path.read_text().splitlines()[: meta["extra"].get("log_lines", 0)]
            self.log = [json.loads(ln) for ln in lines]
        return self.step

    # ------------------------------------------------------------------ the loop
    def _val_metrics(self) -> dict[str, Any]:
        """Greedy macro BAcc / well-formed rate / IoU / report cosine on the first
        ``eval_studies`` val studies (rank 0 only), keys prefixed ``val/``."""
        from echosonar.reason.grpo_eval import greedy_eval

        ev = greedy_eval(self.policy, self.val[:self.cfg.eval_studies],
                         self.cfg.max_completion_length, self.cfg.micro_batch_studies)
        return {f"val/{k}": v for k, v in ev.items() if not isinstance(v, dict)}

    def train(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run to ``cfg.steps``; returns the log (one metrics dict per step)."""
        from echosonar.io.atomic import atomic_write_text
        from echosonar.utils.progress import progress

        if resume:
            self.load()
        cfg = self.cfg
        evaluate = bool(cfg.eval_every and self.val and self.rank == 0)
        if evaluate and self.step == 0:  # the starting point, for the curve in log.jsonl
            from echosonar.io.atomic import atomic_write_json

            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "eval_start.json", self._val_metrics())
        bar = progress(range(self.step, cfg.steps), desc="grpo", total=cfg.steps - self.step)
        for step in bar:
            m = self.train_step(step)
            if evaluate and (step + 1) % cfg.eval_every == 0:
                m.update(self._val_metrics())
            self.log.append(m)
            self.step = step + 1
            if self.rank == 0:
                atomic_write_text(self.out / LOG, "".join(json.dumps(x) + "\n" for x in self.log))
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(reward=f"{m['reward']:.3f}", wf=f"{m['well_formed']:.2f}",
                                    zero=f"{m['frac_zero_std']:.2f}")
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save(self.step)
        if self.rank == 0:
            self.policy.save_pretrained(self.out / FINAL, meta={"grpo_step": self.step})
        barrier(self.world)
        return self.log


__all__ = ["GRPOPolicy", "GRPOTrainer", "Group", "check_config", "study_columns"]
