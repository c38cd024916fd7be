"""Token sampling and batched prediction (generation + parsing + label scores) for evaluation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from echosonar.schema import StudyFeatures
from echosonar.taxonomy import LABEL_KEYS
from echosonar.textformat import parse_generation


def sample_next(logits: Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> Tensor:
    """Next token ids ``[N]`` from logits ``[N, V]``: argmax, or temperature + nucleus sampling.

    Nucleus: keep the smallest set of tokens whose probability reaches ``top_p`` (the most
    likely token is always kept).
    """
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        drop = (sp.cumsum(-1) - sp) >= top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def predict(model: Any, studies: Iterable[StudyFeatures], batch_size: int = 8,
            max_new_tokens: int = 768) -> list[dict[str, Any]]:
    """Greedy generations, parsed, plus the auxiliary-head scores, one dict per study:

    ``{"key", "text", "well_formed", "errors", "findings" (sorted keys), "sections",
    "scores" {label_key: p}}``.
    """
    studies = list(studies)
    out: list[dict[str, Any]] = []
    for i in range(0, len(studies), batch_size):
        batch = studies[i:i + batch_size]
        texts = model.generate(batch, max_new_tokens=max_new_tokens)
        with torch.no_grad():
            scores = model.label_scores(batch).float().cpu().numpy()
        for sf, (text,), sc in zip(batch, texts, scores, strict=True):
            p = parse_generation(text)
            out.append({"key": sf.key, "text": text, "well_formed": p.well_formed,
                        "errors": p.errors, "findings": sorted(p.findings),
                        "sections": p.sections,
                        "scores": {k: float(s) for k, s in zip(LABEL_KEYS, sc, strict=True)}})
    return out
