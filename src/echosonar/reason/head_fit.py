"""Refit the label heads of a trained EchoSonar-R on its frozen LM: ``echosonar train head``.

SFT trains the label heads jointly with the LM, at the LM's learning rate and on mini-batches;
a full-batch fit on the frozen LM still improves the measurement read-out (2026-11-28,
docs/notes/reason.md: after a 500-step SFT from scratch, val BCE 0.233 jointly trained -> 0.211
refitted). Models trained before
:mod:`echosonar.reason.measure_head` existed have none. This stage keeps the LM, projectors,
tokenizer and (by default) the hidden-state head exactly as they are, computes each study's
pooled prompt state once, and fits the measurement head full-batch with BCE on top of the
hidden-state head's logits, keeping the epoch with the lowest val BCE. Generations of the free
decoder do not change; the label scores (and so guided decoding, :mod:`echosonar.reason.guided`)
do.

Why not refit the hidden-state head too (``fit_hidden``): the LM has seen the training studies,
so their pooled states are easier than unseen ones and a refitted head overfits at once (session
5, 419-study model: val BCE 0.282 -> 0.257 refitting both heads, -> 0.219 with the measurement
head alone; 1,419-study model: 0.218 -> 0.189 vs 0.188).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from echosonar.schema import StudyFeatures
from echosonar.taxonomy import LABEL_KEYS


@torch.no_grad()
def pooled_states(model: Any, studies: Sequence[StudyFeatures], batch_size: int = 8
                  ) -> torch.Tensor:
    """``[N, 2H]`` float32: the hidden-state head's input for each study (prompt only)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(studies), batch_size):
            batch = list(studies[i:i + batch_size])
            embeds, mask = model.prompt_embeds(batch)
            out.append(model._pooled(model._hidden(embeds, mask), mask).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2 * model.hidden_size)


def _labels(studies: Sequence[StudyFeatures]) -> torch.Tensor:
    return torch.tensor([[float((sf.labels or {}).get(k, 0)) for k in LABEL_KEYS]
                         for sf in studies])


def fit_label_heads(model: Any, train: Sequence[StudyFeatures], val: Sequence[StudyFeatures],
                    epochs: int = 400, lr: float = 1e-2, weight_decay: float = 0.1,
                    eval_every: int = 10, batch_size: int = 8, fit_hidden: bool = False,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit ``model.meas_head`` (added when missing; and ``model.label_head`` too when
    ``fit_hidden``) in place, on top of the current hidden-state head.

    Returns ``{"epochs", "best_epoch", "train_bce", "val_bce", "val_bce_start", "n_train",
    "n_val", "seconds"}``; the weights kept are those of ``best_epoch`` (lowest val BCE; the
    last epoch without val studies). Raises ``ValueError`` without labelled train studies.
    """
    from echosonar.reason.measure_head import MeasurementHead

    train = [sf for sf in train if sf.labels is not None]
    val = [sf for sf in val if sf.labels is not None]
    if not train:
        raise ValueError("no labelled training studies to fit the label heads on")
    t0 = time.time()
    if model.meas_head is None:
        model.config.measurement_head = True
        model.meas_head = MeasurementHead(len(LABEL_KEYS)).to(model.device)
    model.meas_head.fit_stats(train)
    log(f"pooling prompt states of {len(train)} train + {len(val)} val studies")
    x_tr, x_va = pooled_states(model, train, batch_size), pooled_states(model, val, batch_size)
    m_tr = model.meas_head.features(train).cpu()
    m_va = model.meas_head.features(val).cpu() if val else torch.zeros(0, m_tr.shape[1])
    y_tr, y_va = _labels(train), _labels(val)
    head = copy.deepcopy(model.label_head).cpu().float()
    lin = copy.deepcopy(model.meas_head.linear).cpu().float()
    params = [*head.parameters(), *lin.parameters()] if fit_hidden else [*lin.parameters()]
    for p in [*head.parameters(), *lin.parameters()]:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def bce(x: torch.Tensor, m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(head(x) + lin(m), y)

    with torch.no_grad():
        start = float(bce(x_va, m_va, y_va)) if val else float("nan")
    best = (start if val else float("inf"), 0, copy.deepcopy((head.state_dict(),
                                                                lin.state_dict())))
    for ep in range(1, epochs + 1):
        opt.zero_grad()
        loss = bce(x_tr, m_tr, y_tr)
        loss.backward()
        opt.step()
        if val and (ep % eval_every == 0 or ep == epochs):
            with torch.no_grad():
                v = float(bce(x_va, m_va, y_va))
            if v < best[0]:
                best = (v, ep, copy.deepcopy((head.state_dict(), lin.state_dict())))
    if not val:
        best = (float("nan"), epochs, (head.state_dict(), lin.state_dict()))
    head.load_state_dict(best[2][0])
    lin.load_state_dict(best[2][1])
    with torch.no_grad():
        train_bce = float(bce(x_tr, m_tr, y_tr))
    model.label_head.load_state_dict(head.state_dict())
    model.meas_head.linear.load_state_dict(lin.state_dict())
    res = {"epochs": epochs, "best_epoch": best[1], "fit_hidden": fit_hidden,
           "train_bce": train_bce,
           "val_bce": best[0], "val_bce_start": start, "n_train": len(train),
           "n_val": len(val), "seconds": round(time.time() - t0, 1)}
    log(f"label heads: val BCE {start:.4f} -> {best[0]:.4f} (epoch {best[1]} of {epochs})")
    return res


# ------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--from", dest="source", required=True, metavar="MODEL",
                        help="EchoSonar-R model folder (e.g. RUN/model of train sft, "
                             "RUN/final of train grpo)")
    parser.add_argument("--features", required=True, metavar="FEATURES",
                        help="feature cache with labelled train (and val) studies")
    parser.add_argument("--out", required=True, metavar="MODEL_OUT",
                        help="new model folder (the same model with refitted label heads, "
                             "plus head_fit.json)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_config_args(parser)  # --set head.epochs=... head.lr=...


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from echosonar.config import ConfigError, config_from_args
    from echosonar.io.atomic import atomic_dir, atomic_write_json
    from echosonar.io.checkpoint import CheckpointError
    from echosonar.io.features import FeatureCacheError
    from echosonar.reason.data import load_split
    from echosonar.reason.model import EchoSonarR

    out = Path(args.out)
    if out.resolve() == Path(args.source).resolve():
        print("echosonar train head: --out must differ from --from", file=sys.stderr)
        return 2
    if out.exists() and not args.overwrite:
        print(f"echosonar train head: {out} exists (use --overwrite)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    try:
        h = config_from_args(args).head
        model = EchoSonarR.from_pretrained(args.source)
        train = load_split(args.features, "train", require_targets=False)
        val = load_split(args.features, "val", require_targets=False)
        res = fit_label_heads(model, train, val, h.epochs, h.lr, h.weight_decay, h.eval_every,
                              fit_hidden=h.fit_hidden)
    except (ConfigError, CheckpointError, FeatureCacheError, ValueError) as e:
        print(f"echosonar train head: {e}", file=sys.stderr)
        return 2
    info = {**res, "source": str(args.source), "features": str(args.features)}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, {"head_fit": info})
        atomic_write_json(tmp / "head_fit.json", info)
    print(f"done: {out} (val BCE {res['val_bce_start']:.4f} -> {res['val_bce']:.4f})")
    return 0
