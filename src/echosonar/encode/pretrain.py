"""Encoder pretraining loop: view-masked label BCE + measurement regression (+ masked video).

Output folder ``OUT/``::

    model.safetensors, config.json     the encoder (kind "clip_encoder"; load_encoder(OUT))
    heads/                             label/measurement heads + measurement normalisation
    last/                              latest weights + optimizer/RNG state (exact resume)
    metrics.json                       per-epoch train/val losses, val AUROC and R^2
    config.yaml, run_info.json         resolved config and provenance

The best epoch (lowest validation label + measurement loss) is the one kept at ``OUT/``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echosonar.config.encode import EncoderModelConfig, EncoderTrainConfig
from echosonar.encode.data import MEASURE_KEYS, ClipTable, augment, stack_frames
from echosonar.encode.losses import (
    HeadsConfig,
    PretrainHeads,
    masked_bce,
    masked_huber,
    multitask_loss,
)
from echosonar.encode.models import ClipEncoder
from echosonar.io.atomic import atomic_write_json
from echosonar.io.checkpoint import load_training_state, save_training_state
from echosonar.taxonomy import LABEL_KEYS


def batch_of(table: ClipTable, idx: list[int] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Collate clips ``idx`` of ``table`` into the dict :func:`multitask_loss` reads."""
    idx = [int(i) for i in idx]
    return {"frames": stack_frames([table.frames[i] for i in idx]), "views": table.views[idx],
            "labels": table.labels[idx], "label_mask": table.label_mask[idx],
            "measures": table.measures[idx], "measure_mask": table.measure_mask[idx]}


@torch.no_grad()
def evaluate_table(encoder: ClipEncoder, heads: PretrainHeads, table: ClipTable,
                   batch_size: int = 32) -> dict[str, Any]:
    """Clip-level validation: masked losses, per-label AUROC over visible clips, per-measure R^2."""
    from sklearn.metrics import roc_auc_score

    encoder.eval()
    heads.eval()
    logits, meas, lsum, msum, n = [], [], 0.0, 0.0, 0
    for s in range(0, len(table), batch_size):
        b = batch_of(table, range(s, min(len(table), s + batch_size)))
        out = heads(encoder(b["frames"], b["views"]))
        logits.append(out["label_logits"])
        meas.append(heads.denormalise(out["measure"]))
        k = len(b["views"])
        lsum += float(masked_bce(out["label_logits"], b["labels"], b["label_mask"])) * k
        msum += float(masked_huber(out["measure"], heads.normalise(b["measures"]),
                                   b["measure_mask"])) * k
        n += k
    lg, pm = torch.cat(logits).numpy(), torch.cat(meas).numpy()
    auroc: dict[str, float | None] = {}
    for i, key in enumerate(LABEL_KEYS):
        vis = table.label_mask[:, i].numpy() > 0
        y = table.labels[vis, i].numpy()
        auroc[key] = (float(roc_auc_score(y, lg[vis, i])) if vis.any() and 0 < y.sum() < len(y)
                      else None)
    r2: dict[str, float | None] = {}
    for i, key in enumerate(MEASURE_KEYS):
        vis = table.measure_mask[:, i].numpy() > 0
        y = table.measures[vis, i].numpy()
        ss = float(((y - y.mean()) ** 2).sum()) if vis.sum() > 1 else 0.0
        r2[key] = 1.0 - float(((pm[vis, i] - y) ** 2).sum()) / ss if ss > 0 else None
    au = [v for v in auroc.values() if v is not None]
    rr = [v for v in r2.values() if v is not None]
    return {"label_loss": lsum / n, "measure_loss": msum / n,
            "mean_auroc": float(np.mean(au)) if au else math.nan,
            "mean_r2": float(np.mean(rr)) if rr else math.nan, "auroc": auroc, "r2": r2}


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def pretrain(train: ClipTable, val: ClipTable | None, model_cfg: EncoderModelConfig,
             cfg: EncoderTrainConfig, out: str | Path, resume: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain a :class:`ClipEncoder` on ``train``; keep the best-on-``val`` epoch at ``out``.

    Returns the metrics dict also written to ``out/metrics.json``.
    """
    out = Path(out)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    encoder = ClipEncoder(model_cfg)
    encoder.fit_input_stats((stack_frames([f])[0] for f in train.frames), train.views.tolist())
    heads = PretrainHeads(HeadsConfig(dim=model_cfg.dim))
    heads.init_from_data(train.labels, train.label_mask, train.measures, train.measure_mask)
    params = list(encoder.parameters()) + list(heads.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(total, max(1, int(cfg.warmup_frac * total))))
    weights = {"label": cfg.label_weight, "measure": cfg.measure_weight,
               "mask_video": cfg.mask_video_weight}
    history: list[dict[str, Any]] = []
    best, start_epoch = math.inf, 0
    if resume and (out / "last" / "training_state.json").is_file():
        encoder.load_state_dict(ClipEncoder.from_pretrained(out / "last").state_dict())
        heads.load_state_dict(PretrainHeads.from_pretrained(out / "last" / "heads").state_dict())
        meta = load_training_state(out / "last", opt, sched)
        start_epoch, best = meta["extra"]["epoch"] + 1, meta["extra"]["best"]
        history = meta["extra"]["history"]
        gen.set_state(meta["extra_tensors"]["gen"])
        log(f"resumed from {out / 'last'} at epoch {start_epoch}")
    for epoch in range(start_epoch, cfg.epochs):
        encoder.train()
        heads.train()
        t0, sums, n = time.time(), {}, 0
        perm = torch.randperm(len(train), generator=gen)
        for s in range(0, len(train), cfg.batch_size):
            b = batch_of(train, perm[s:s + cfg.batch_size])
            if cfg.augment:
                b["frames"] = augment(b["frames"], gen, cfg.augment_shift)
            loss, parts = multitask_loss(encoder, heads, b, weights, cfg.mask_ratio, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            k = len(b["views"])
            for key, v in parts.items():
                sums[key] = sums.get(key, 0.0) + v * k
            n += k
        row: dict[str, Any] = {"epoch": epoch, "seconds": round(time.time() - t0, 1),
                               "clips_per_s": round(n / max(1e-9, time.time() - t0), 1),
                               **{f"train_{k}": v / n for k, v in sums.items()}}
        if val is not None and len(val):
            ev = evaluate_table(encoder, heads, val)
            row.update({f"val_{k}": v for k, v in ev.items()})
            score = ev["label_loss"] + ev["measure_loss"]
        else:
            score = row["train_label"] + row["train_measure"]
        history.append(row)
        if score < best:
            best = score
            meta = {"epoch": epoch, "score": score, "train_clips": len(train)}
            encoder.save_pretrained(out, meta=meta)
            heads.save_pretrained(out / "heads", meta=meta)
        encoder.save_pretrained(out / "last")
        heads.save_pretrained(out / "last" / "heads")
        save_training_state(out / "last", opt, sched, (epoch + 1) * steps_per_epoch,
                            extra={"epoch": epoch, "best": best, "history": history},
                            extra_tensors={"gen": gen.get_state()})
        log(f"epoch {epoch}: " + " ".join(f"{k}={v:.4g}" for k, v in row.items()
                                          if isinstance(v, float)))
    result = {"history": history, "best_score": best, "model": model_cfg.__dict__,
              "n_train_clips": len(train), "n_val_clips": len(val) if val is not None else 0}
    atomic_write_json(out / "metrics.json", result)
    return result


def load_metrics(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "metrics.json").read_text())
