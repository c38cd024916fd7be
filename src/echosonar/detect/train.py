"""Training loop of the structure detector (``echosonar train detector``).

Outputs in ``OUT/``::

    model.safetensors + config.json     the detector (latest epoch; final = calibrated)
    training_state.{safetensors,json}   optimizer, scheduler, RNG, epoch: exact resume
    config.yaml, run_info.json          resolved config and provenance
    metrics.jsonl                       one line per epoch (losses, lr, val mAP, seconds)
    eval.json                           final evaluation: COCO mAP per class on val/test,
                                        clip presence, measurement MAE (raw and calibrated)

Resume is exact at epoch granularity: each epoch's frame sampling, augmentation and view dropout
come from a generator seeded by ``(seed, epoch)``, and the optimizer/scheduler state is restored.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from echosonar.config import EchoSonarConfig, save_yaml
from echosonar.config.detect import DetectConfig
from echosonar.detect.data import (
    FrameSet,
    augment,
    build_frameset,
    epoch_indices,
    us_augment_frames,
)
from echosonar.detect.losses import DetectionLoss
from echosonar.detect.model import OTHER_INDEX, Detector
from echosonar.io.atomic import atomic_write_json, atomic_write_text
from echosonar.io.checkpoint import (
    STATE_META,
    CheckpointError,
    load_checkpoint,
    load_training_state,
    save_training_state,
)
from echosonar.schema import Study

METRICS = "metrics.jsonl"
EVAL = "eval.json"


def lr_lambda(cfg: DetectConfig, total_steps: int):
    """Linear warm-up then cosine decay to 5 % of the peak."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        p = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def train_epoch(model: Detector, data: FrameSet, loss_fn: DetectionLoss,
                opt: torch.optim.Optimizer, sched: Any, cfg: DetectConfig, epoch: int,
                show: bool = False) -> dict[str, float]:
    """One epoch; returns mean losses. Deterministic given ``(cfg.seed, epoch)``."""
    from echosonar.utils.progress import progress

    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    idx = epoch_indices(data, cfg.frames_per_clip, gen, cfg.repeat_threshold)
    batches = list(torch.split(idx, cfg.batch_size))
    model.train()
    sums: dict[str, float] = {}
    bar = progress(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", force=show)
    for bi in bar:
        frames = data.frames[bi].float() / 255.0
        present, boxes = data.present[bi], data.boxes[bi]
        if cfg.us_augment > 0:  # before the generic jitter, as for the view classifier
            frames, present, boxes = us_augment_frames(frames, present, boxes, cfg.us_augment,
                                                       gen, cfg.us_depth_zoom)
        frames, present, boxes = augment(frames, present, boxes, cfg.augment, gen)
        views = data.views[bi].clone()
        views[torch.rand(len(bi), generator=gen) < cfg.view_dropout] = OTHER_INDEX
        out = model(frames, views)
        loss, logs = loss_fn(out, present, boxes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + v
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{logs['total']:.3f}")
    return {k: v / max(1, len(batches)) for k, v in sums.items()}


def _load_split(cache: str | Path, split: str) -> list[Study]:
    from echosonar.ingest.cache import iter_cache

    return list(iter_cache(cache, split, as_float=False))


def _short_eval(res: dict[str, Any]) -> dict[str, Any]:
    c = res["coco"]
    return {"map50": c["map50"], "map": c["map"]}


def train_detector(cfg: EchoSonarConfig, cache: str | Path, out: str | Path,
                   resume: bool = False, show: bool = False,
                   log: Any = print) -> dict[str, Any]:
    """Train on the ``train`` split of clip cache ``cache``; evaluate on ``val``/``test``.

    Returns the final evaluation (also written to ``OUT/eval.json``).
    """
    from echosonar.detect.evaluate import evaluate_studies
    from echosonar.utils.repro import run_info, seed_everything

    dcfg = cfg.detect
    out = Path(out)
    torch.set_num_threads(max(1, dcfg.threads))
    seed_everything(dcfg.seed)
    t0 = time.time()
    train_studies = _load_split(cache, "train")
    if not train_studies:
        raise ValueError(f"clip cache {cache} has no 'train' split studies")
    val_studies = _load_split(cache, "val")
    data = build_frameset(train_studies, dcfg.image_size, dcfg.max_clips)
    log(f"train: {len(train_studies)} studies, {data.n_clips} clips, {len(data)} frames; "
        f"val: {len(val_studies)} studies ({time.time() - t0:.1f}s to load)")
    model = Detector(dcfg)
    if dcfg.init_from and not (resume and (out / STATE_META).is_file()):
        init, init_cfg = load_checkpoint(dcfg.init_from, Detector.checkpoint_kind)
        if {k: init_cfg["config"].get(k) for k in _ARCH} != _arch_only(dcfg):
            raise CheckpointError(f"detect.init_from={dcfg.init_from}: its architecture differs "
                                  "from the config's")
        model.load_state_dict(init, strict=True)
        log(f"initialised from {dcfg.init_from}")
    opt = torch.optim.AdamW(model.parameters(), lr=dcfg.lr, weight_decay=dcfg.weight_decay)
    n_epoch = len(epoch_indices(data, dcfg.frames_per_clip, torch.Generator().manual_seed(0),
                                dcfg.repeat_threshold))
    steps_per_epoch = math.ceil(n_epoch / dcfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(dcfg, dcfg.epochs *
                                                             steps_per_epoch))
    loss_fn = DetectionLoss(dcfg)
    start, history = 0, []
    if resume and (out / STATE_META).is_file():
        tensors, meta_cfg = load_checkpoint(out, Detector.checkpoint_kind)
        if {k: meta_cfg["config"].get(k) for k in _ARCH} != _arch_only(dcfg):
            raise CheckpointError(f"{out}: cannot resume, the architecture in the config differs "
                                  "from the checkpoint's")
        model.load_state_dict(tensors, strict=True)
        state = load_training_state(out, opt, sched)
        start = int(state["extra"]["epoch"]) + 1
        history = list(state["extra"].get("history", []))
        log(f"resuming after epoch {start} of {dcfg.epochs}")
    elif resume:
        log(f"--resume: no training state in {out}; starting fresh")
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    atomic_write_json(out / "run_info.json", run_info(dcfg.seed, command="train detector",
                                                      cache=str(cache), resumed_from=start))
    for epoch in range(start, dcfg.epochs):
        te = time.time()
        losses = train_epoch(model, data, loss_fn, opt, sched, dcfg, epoch, show)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": sched.last_epoch,
                               "lr": opt.param_groups[0]["lr"], **losses}
        last = epoch + 1 == dcfg.epochs
        if val_studies and (last or (dcfg.eval_every and (epoch + 1) % dcfg.eval_every == 0)):
            row.update({f"val_{k}": v for k, v in
                        _short_eval(evaluate_studies(model, val_studies)).items()})
        row["seconds"] = round(time.time() - te, 1)
        history.append(row)
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items() if v is not None))
        atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in history))
        model.save_pretrained(out, meta={"epoch": epoch + 1, "calibrated": False})
        save_training_state(out, opt, sched, sched.last_epoch,
                            extra={"epoch": epoch, "history": history})
    return finalize(model, cache, out, train_studies, val_studies, log)


_ARCH = ("embed_dim", "image_size", "widths", "memory_strides", "auto_gain", "refine",
         "roi_points", "decoder_layers", "heads", "assign", "num_queries", "view_cond")


def _arch_only(cfg: DetectConfig) -> dict[str, Any]:
    from echosonar.config.base import to_dict

    d = to_dict(cfg)
    return {k: d[k] for k in _ARCH}


def finalize(model: Detector, cache: str | Path, out: Path, train_studies: list[Study],
             val_studies: list[Study], log: Any = print) -> dict[str, Any]:
    """Fit the measurement calibration on the training clips, evaluate raw and calibrated
    measurements and COCO mAP on val and test, save the calibrated detector and ``eval.json``."""
    import numpy as np

    from echosonar.detect.evaluate import evaluate_studies
    from echosonar.detect.measure import DEFAULT_CALIB, fit_calibration

    t0 = time.time()
    with torch.no_grad():
        model.measure_calib.copy_(torch.as_tensor(DEFAULT_CALIB))
    tr = evaluate_studies(model, train_studies, collect_calibration=True)
    calib = fit_calibration(tr["calib_samples"])
    report: dict[str, Any] = {"train": {k: tr[k] for k in ("coco", "measure_mae")}}
    with torch.no_grad():
        model.measure_calib.copy_(torch.as_tensor(calib))
    test_studies = _load_split(cache, "test")
    for name, studies in (("val", val_studies), ("test", test_studies)):
        if not studies:
            continue
        res = evaluate_studies(model, studies, calibrations={"raw": DEFAULT_CALIB})
        report[name] = res
        c, cal, raw = res["coco"], res["measure_mae"], res["measure_mae_raw"]
        log(f"{name}: mAP@0.5={c['map50']:.3f} mAP@[.5:.95]={c['map']:.3f} "
            f"LVEDD MAE={_fmt(cal['lvedd_cm'])} cm (raw {_fmt(raw['lvedd_cm'])}), "
            f"EF MAE={_fmt(cal['ef_proxy_pct'])} % (raw {_fmt(raw['ef_proxy_pct'])})")
    with torch.no_grad():
        model.measure_calib.copy_(torch.as_tensor(np.asarray(calib)))
    model.save_pretrained(out, meta={"calibrated": True, "eval": {
        k: _short_eval(v) for k, v in report.items() if "coco" in v}})
    report["calibration"] = np.asarray(calib).tolist()
    report["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(out / EVAL, report)
    return report


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
