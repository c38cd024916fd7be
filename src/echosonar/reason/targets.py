"""SFT targets as tokens: each target is tokenised once, with character offsets, and every
per-token tensor the SFT losses need is read off that one encoding -- the ids and mask, the view
block a reasoning line cites from (the copy head's source), the citation mask and the decision
weights (``sft.finding_weight``).

Why one home: these used to be three tokenisations of the same text per SFT step, each with its
own cut at the row's token budget; a single :class:`EncodedTargets` keeps them aligned by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from echosonar.reason.prompt import spans_mask
from echosonar.taxonomy import VIEWS
from echosonar.textformat import citation_spans


@dataclass
class EncodedTargets:
    """A batch of targets, tokenised once.

    Attributes:
        texts: the target strings.
        ids: long ``[B, T]``: each text's tokens + eos, right-padded, row i cut at its budget.
        mask: long ``[B, T]``: 1 on a row's kept tokens.
        offsets: per row, the character span ``(a, b)`` of each of the text's tokens (eos has
            none), cut at ``T``.
    """

    texts: list[str]
    ids: Tensor
    mask: Tensor
    offsets: list[list[tuple[int, int]]]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.ids.shape)


def encode_targets(tokenizer: Any, targets: list[str], max_tokens: Tensor | list[int] | int,
                   eos_id: int, pad_id: int) -> EncodedTargets:
    """Tokenise ``targets`` once. Row i keeps at most ``max_tokens[i]`` tokens (text + eos; an
    int applies to every row; at least 1). Tensors are on the CPU."""
    if isinstance(max_tokens, int):
        max_tokens = [max_tokens] * len(targets)
    lim = [max(1, int(m)) for m in max_tokens]
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in targets]
    rows = [(e["input_ids"] + [eos_id])[:m] for e, m in zip(enc, lim, strict=True)]
    t = max(len(x) for x in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, x in enumerate(rows):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    offsets = [[tuple(o) for o in e["offset_mapping"][:t]] for e in enc]
    return EncodedTargets(list(targets), ids, mask, offsets)


def target_segments(enc: EncodedTargets, cites_only: bool = False, answer: bool = False
                    ) -> Tensor:
    """``[B, T]`` long: for each target token, ``1 +`` the ``taxonomy.VIEWS`` index of the
    reasoning line (``view V: ...``) it starts in, 0 elsewhere (tags, answer, report, eos).
    ``cites_only``: 0 also on tokens outside the line's citations
    (:func:`~echosonar.textformat.citation_spans`). ``answer`` (``lm.copy_answer``): the tokens
    of the answer's finding names get ``answer_copy.SELF`` (they read the reasoning's
    findings)."""
    from echosonar.reason.answer_copy import SELF, answer_finding_spans

    out = torch.zeros(enc.shape, dtype=torch.long)
    for i, (text, offs) in enumerate(zip(enc.texts, enc.offsets, strict=True)):
        if not offs:
            continue
        starts = torch.tensor([a for a, _ in offs], dtype=torch.long)
        row = torch.zeros(len(offs), dtype=torch.long)
        pos = 0
        for line in text.split("\n"):
            head = line.split(":", 1)[0]
            if head.startswith("view ") and head[5:] in VIEWS:
                row[(starts >= pos) & (starts < pos + len(line))] = VIEWS.index(head[5:]) + 1
            pos += len(line) + 1
        if cites_only:
            row *= torch.from_numpy(spans_mask(offs, citation_spans(text)))
        if answer:
            row[torch.from_numpy(spans_mask(offs, answer_finding_spans(text))).bool()] = SELF
        out[i, :len(offs)] = row
    return out


def decision_weights(enc: EncodedTargets, weight: float) -> Tensor:
    """``[B, T]`` float per-token loss weights: ``weight`` on tokens that start inside a
    :func:`~echosonar.reason.data.decision_spans` span of their target, 1 elsewhere."""
    from echosonar.reason.data import decision_spans

    out = torch.ones(enc.shape, dtype=torch.float32)
    for i, (text, offs) in enumerate(zip(enc.texts, enc.offsets, strict=True)):
        spans = decision_spans(text)
        if not spans or not offs:
            continue
        starts = torch.tensor([a for a, _ in offs], dtype=torch.long)
        inside = torch.zeros(len(offs), dtype=torch.bool)
        for a, b in spans:
            inside |= (starts >= a) & (starts < b)
        out[i, :len(offs)][inside] = weight
    return out
