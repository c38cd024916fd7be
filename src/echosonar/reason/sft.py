"""Supervised fine-tuning of EchoSonar-R (single process or ``torchrun`` DDP).

Run folder ``OUT/``::

    config.yaml, run_info.json      resolved config and provenance (rank 0)
    tokenizer/                      the trained BPE tokenizer (from-scratch runs)
    log.jsonl                       {"kind": "train"|"val"|"samples", "step", ...} per line
    checkpoint/                     latest model + training state (exact resume), atomic
    model/                          final weights (EchoSonarR.from_pretrained)
    tb/                             TensorBoard events, when tensorboard is installed

Loss normalisation is global: the LM loss is the sum of target-token CE over the global batch
divided by its token count (all-reduced before the forward passes), the aux BCE is divided by
(global studies x labels); gradients of 1 process and of W processes with the same global batch
therefore agree up to float reduction order. Micro-batches accumulate gradients the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from echosonar.config import EchoSonarConfig, save_yaml
from echosonar.io.atomic import atomic_dir, atomic_write_json, atomic_write_text
from echosonar.io.checkpoint import load_training_state, save_training_state
from echosonar.reason.data import batch_indices, load_split, sft_target, study_weights
from echosonar.taxonomy import LABEL_KEYS


class SFTError(RuntimeError):
    """Bad run folder or inputs for SFT."""


def setup_distributed(device_pref: str = "auto") -> tuple[int, int, str]:
    """Init the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl on CUDA,
    gloo on CPU. Returns ``(rank, world_size, device)``."""
    import torch.distributed as dist

    from echosonar.utils.repro import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_pref)
    if device.startswith("cuda") and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


#: ``sft.precision`` choices
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def train_autocast(device: str | torch.device, precision: str = "fp32") -> Any:
    """The autocast context of a training pass: bf16 on CUDA (always); on CPU bf16 when
    ``precision`` is ``"bf16"`` (products in bfloat16 -- several times fp32's rate where the
    CPU has AVX512-BF16 or AMX; weights, optimizer state and losses stay fp32), else none."""
    from echosonar.reason.model import _autocast

    if precision not in PRECISIONS:
        raise SFTError(f"sft.precision must be one of {', '.join(PRECISIONS)}, not "
                       f"{precision!r}")
    device = torch.device(device)
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return _autocast(device)


def _all_reduce(values: list[float], device: str, world: int) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _record(line: str) -> dict[str, Any] | None:
    """A log line's record; None for a blank line or the torn last line of a killed run."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


class _Log:
    """JSONL log (+ TensorBoard when installed); only rank 0 writes."""

    def __init__(self, out: Path, active: bool, keep_until: int | None) -> None:
        self.path, self.active, self.tb = out / "log.jsonl", active, None
        if not active:
            return
        if keep_until is not None and self.path.is_file():  # resume: drop lines past the ckpt
            kept = [ln for ln in self.path.read_text().splitlines()
                    if (rec := _record(ln)) is not None and rec.get("step", 0) <= keep_until
                    and rec.get("kind") != "head_fit"]  # written after the last checkpoint
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        elif keep_until is None:
            atomic_write_text(self.path, "")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, rec: dict[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{rec['kind']}/{k}", v, rec["step"])


def _build(cfg: EchoSonarConfig, out: Path, train: list, rank: int, world: int,
           ckpt: Path | None, init_from: str | Path | None = None) -> Any:
    from echosonar.reason.model import EchoSonarR, build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.tokenizer import corpus_from_studies, load_tokenizer, train_tokenizer

    if ckpt is not None:
        return EchoSonarR.from_pretrained(ckpt)
    if init_from is not None:  # a new phase: these weights, fresh optimizer and schedule
        return EchoSonarR.from_pretrained(init_from)
    tok = None
    if cfg.lm.tokenizer:
        tok = load_tokenizer(cfg.lm.tokenizer)
    elif not cfg.lm.base_model:
        tdir = out / "tokenizer"
        if rank == 0:
            tok = train_tokenizer(corpus_from_studies(train, cfg.sft.target, cfg.lm.measurement_flags,
                                                      cfg.sft.report),
                                  cfg.lm.vocab_size)
            with atomic_dir(tdir) as tmp:
                tok.save_pretrained(str(tmp))
        _barrier(world)
        if rank != 0:
            tok = load_tokenizer(tdir)
    model = build_model(cfg.lm, tok, feature_dims(train[0]))
    if model.meas_head is not None:  # standardise with training statistics (every rank alike)
        model.meas_head.fit_stats(train)
    return model


def train_sft(cfg: EchoSonarConfig, features: str | Path, out: str | Path,
              resume: bool = False, train: list | None = None, val: list | None = None,
              stop_after: int | None = None, init_from: str | Path | None = None
              ) -> dict[str, Any]:
    """Train (or resume) SFT; returns ``{"history": [train records], "val": [...],
    "model_dir": Path, "model": EchoSonarR}``. ``init_from`` starts a new run (fresh optimizer,
    schedule and log) from an EchoSonar-R model folder, e.g. a second phase with other
    settings; its tokenizer and LM shape win over ``cfg.lm``. ``train``/``val`` override the feature cache
    (tests, benchmarks); ``stop_after`` ends the run abruptly after that global step, like a
    kill (no final save beyond the periodic checkpoints)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from echosonar.utils.progress import progress
    from echosonar.utils.repro import run_info, seed_everything

    s = cfg.sft
    train_autocast("cpu", s.precision)  # a bad value fails before any work
    if s.balance < 0 or s.finding_weight <= 0:
        raise SFTError(f"sft.balance must be >= 0 (got {s.balance}) and sft.finding_weight > 0 "
                       f"(got {s.finding_weight})")
    out = Path(out)
    rank, world, device = setup_distributed(s.device)
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    ckpt = out / "checkpoint"
    if resume and not (ckpt / "training_state.json").is_file():
        raise SFTError(f"--resume: no checkpoint to resume in {ckpt}")
    if resume and init_from is not None:
        raise SFTError("--resume continues RUN/checkpoint; --init-from starts a new run: "
                       "choose one")
    if not resume and ckpt.exists():
        raise SFTError(f"{out} already holds a checkpoint; pass --resume or choose a new --out")
    seed_everything(s.seed)
    train = train if train is not None else load_split(features, "train")
    val = val if val is not None else load_split(features, "val", limit=s.val_studies)
    if not train:
        raise SFTError(f"{features}: no training studies (split 'train')")
    if s.batch_size % world:
        raise SFTError(f"sft.batch_size {s.batch_size} is not divisible by {world} processes")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
        atomic_write_json(out / "run_info.json", run_info(
            s.seed, world_size=world, device=device, features=str(features),
            n_train=len(train), n_val=len(val), resumed=resume,
            init_from=str(init_from) if init_from else None))
    model = _build(cfg, out, train, rank, world, ckpt if resume else None,
                   init_from).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": s.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: lr_factor(i, s.warmup, s.steps, s.min_lr_ratio))
    start = 0
    if resume:
        start = int(load_training_state(ckpt, opt, sched)["step"])
    ddp = DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda")
              else None) if world > 1 else model
    log = _Log(out, rank == 0, start if resume else None)
    # the answer lists findings in the order the answer-copy pointer reads them back
    order = ("reasoning" if cfg.lm.copy_head and cfg.lm.copy_answer
             and cfg.lm.copy_answer_slots == "first" else "taxonomy")
    targets = {sf.key: sft_target(sf, s.target, cfg.lm.measurement_flags, s.report, order)
               for sf in train}
    val_targets = {sf.key: sft_target(sf, s.target, cfg.lm.measurement_flags, s.report, order)
                   for sf in val}
    n_tok_cache: dict[str, int] = {}

    def n_target_tokens(sf: Any) -> int:  # per study, batch-independent (see encode_targets)
        if sf.key not in n_tok_cache:
            p = len(model.prompt_ids([sf])[0])
            t = len(model.tokenizer(targets[sf.key], add_special_tokens=False)["input_ids"]) + 1
            n_tok_cache[sf.key] = max(1, min(t, cfg.lm.max_len - p))
        return n_tok_cache[sf.key]

    weights = study_weights(train, s.balance) if s.balance > 0 else None
    history, val_hist = [], []
    micro = s.micro_batch_size or s.batch_size // world
    steps = range(start, s.steps)
    bar = progress(steps, desc="sft", total=len(steps)) if rank == 0 else steps
    model.train()
    for step in bar:
        t0 = time.perf_counter()
        idx = batch_indices(len(train), s.batch_size, step, s.seed, rank, world, weights)
        batch = [train[i] for i in idx]
        n_glob = _all_reduce([float(sum(n_target_tokens(sf) for sf in batch))], device, world)[0]
        sums = [0.0, 0.0, 0.0]  # lm_sum, aux_sum, tokens
        chunks = [batch[i:i + micro] for i in range(0, len(batch), micro)]
        for j, mb in enumerate(chunks):
            sync = j == len(chunks) - 1 or world == 1
            ctx = contextlib.nullcontext() if sync else ddp.no_sync()
            with ctx, train_autocast(device, s.precision):
                o = ddp(mb, [targets[sf.key] for sf in mb], s.finding_weight,
                        s.copy_loss_weight)
                # x world: DDP averages gradients over ranks, we want the global sum / counts
                loss = (o["lm_loss_sum"] / n_glob + cfg.lm.aux_weight * o["aux_loss_sum"]
                        / (s.batch_size * len(LABEL_KEYS))) * world
            loss.backward()
            sums = [sums[0] + o["lm_loss_sum"].item(), sums[1] + o["aux_loss_sum"].item(),
                    sums[2] + o["n_tokens"].item()]
        gnorm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        lm_sum, aux_sum, ntok = _all_reduce(sums, device, world)
        dt = time.perf_counter() - t0
        rec = {"kind": "train", "step": step + 1, "lm_loss": lm_sum / ntok,
               "aux_loss": aux_sum / (s.batch_size * len(LABEL_KEYS)),
               "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm), "tokens": int(ntok),
               "step_time": dt, "tokens_per_s": ntok / dt}
        rec["loss"] = rec["lm_loss"] + cfg.lm.aux_weight * rec["aux_loss"]
        history.append(rec)
        last = step + 1 == s.steps
        if s.log_every and ((step + 1) % s.log_every == 0 or last or step == start):
            log.write(rec)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.1e}")
        if rank == 0 and val and ((s.eval_every and (step + 1) % s.eval_every == 0) or last):
            v = evaluate_loss(model, val, targets=val_targets, batch_size=micro, device=device)
            v.update(kind="val", step=step + 1)
            val_hist.append(v)
            log.write(v)
        if (s.save_every and (step + 1) % s.save_every == 0) or last:
            if rank == 0:
                with atomic_dir(ckpt) as tmp:
                    model.save_pretrained(tmp, meta={"step": step + 1})
                    save_training_state(tmp, opt, sched, step + 1, extra={"world": world})
            _barrier(world)
        # samples are a diagnostic: they come after the checkpoint, and a failure to decode
        # is logged, never the end of a run
        if rank == 0 and val and s.samples and (
                (s.sample_every and (step + 1) % s.sample_every == 0) or last):
            try:
                log.write(sample_record(model, val[:s.samples], step + 1, s.max_new_tokens))
            except Exception as e:  # noqa: BLE001 (any decoding failure)
                log.write({"kind": "sample_error", "step": step + 1,
                           "error": f"{type(e).__name__}: {e}"})
        if stop_after is not None and step + 1 >= stop_after and not last:
            return {"history": history, "val": val_hist, "model_dir": None, "model": model}
    model_dir = out / "model"
    if rank == 0 and (s.steps > start or not (model_dir / "config.json").is_file()):
        meta: dict[str, Any] = {"step": s.steps}
        if s.refit_heads:
            from echosonar.reason.head_fit import fit_label_heads

            h = cfg.head
            val_all = load_split(features, "val", require_targets=False) if features else val
            meta["head_fit"] = fit_label_heads(
                model, train, val_all, h.epochs, h.lr, h.weight_decay, h.eval_every, micro,
                h.fit_hidden,
                log=lambda m: log.write({"kind": "head_fit", "step": s.steps, "message": m}))
        with atomic_dir(model_dir) as tmp:
            model.save_pretrained(tmp, meta=meta)
    _barrier(world)
    if log.tb is not None:
        log.tb.close()
    return {"history": history, "val": val_hist, "model_dir": model_dir, "model": model}


@torch.no_grad()
def evaluate_loss(model: Any, studies: list, targets: dict[str, str] | None = None,
                  batch_size: int = 8, device: str | None = None) -> dict[str, float]:
    """Teacher-forced loss over ``studies`` (token-weighted LM loss, mean aux BCE)."""
    from echosonar.reason.model import _autocast

    was = model.training
    model.eval()
    lm_sum = aux_sum = ntok = 0.0
    try:
        for i in range(0, len(studies), batch_size):
            b = studies[i:i + batch_size]
            with _autocast(model.device):
                o = model.forward_sft(b, [targets[sf.key] if targets else sft_target(sf)
                                          for sf in b])
            lm_sum += float(o["lm_loss_sum"])
            aux_sum += float(o["aux_loss_sum"])
            ntok += float(o["n_tokens"])
    finally:
        model.train(was)
    n_lab = len(studies) * len(LABEL_KEYS)
    return {"lm_loss": lm_sum / max(ntok, 1), "aux_loss": aux_sum / max(n_lab, 1),
            "tokens": int(ntok)}


def sample_record(model: Any, studies: list, step: int, max_new_tokens: int) -> dict[str, Any]:
    """Greedy generations for a few studies, with the strict parser's verdict."""
    from echosonar.textformat import parse_generation

    texts = model.generate(studies, max_new_tokens=max_new_tokens)
    samples = []
    for sf, (t,) in zip(studies, texts, strict=True):
        p = parse_generation(t)
        samples.append({"key": sf.key, "well_formed": p.well_formed, "errors": p.errors[:3],
                        "text": t})
    return {"kind": "samples", "step": step, "samples": samples}
