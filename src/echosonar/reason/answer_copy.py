"""The answer reads the reasoning: the copy head's pointer over the completion's own findings.

Why. With the copy head a reasoning line reads its evidence off the prompt (96 % of citations
exact), and the lines' findings follow the flags they cite -- yet the answer block, some 600
tokens further on, was written as if from scratch: on the test split the union of the lines'
findings scored 67-71 % macro balanced accuracy and the answer 57-58 % (three seeds,
docs/notes/reason.md, 2026-12-06 (d)). The answer restates the reasoning, so ``lm.copy_answer``
gives that restating the path citations have: every completion token the model has read becomes
a slot of the pointer too, copyable when it names a finding in a reasoning line's
``findings:`` list, and SFT's pointer loss asks each name token of the answer's ``findings:``
line to be read from there. A finding the reasoning never concluded (one only an unacquired view
shows) has no source and stays the generator's.

One rule decides which completion tokens are copyable and when the answer phase begins,
applied token by token (:class:`AnswerSources` over a :class:`FindingTracker`), so the decoding
loop (growing the slots as it reads) and the teacher-forced pass (SFT, GRPO log-probs) see the
same slots and phases by construction: inside the ``<think>`` block, after a ``findings`` token
and a ``:`` token, every token up to the first one holding ``.`` or a newline, except the
separators and ``none``; the prompt's slots are read until ``</think>``, the completion's after
it.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from echosonar.taxonomy import VIEWS

#: source segment of the reasoning's findings (prompt view blocks are 1..len(VIEWS))
SELF = len(VIEWS) + 1

_ANSWER_FINDINGS = re.compile(r"<answer>\nfindings: ([^\n]*)")


class FindingTracker:
    """Token-by-token: is the token just read a name in a reasoning line's findings list?

    Built from the tokenizer's vocabulary once; :meth:`feed` takes one token per row
    (``[N]`` long) and returns ``[N]`` bool, keeping each row's state (inside ``<think>``, just
    after ``findings``, inside the list).
    """

    def __init__(self, tokenizer: Any, n: int, device: torch.device | str = "cpu") -> None:
        text = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        t = lambda f: torch.tensor([f(s) for s in text], dtype=torch.bool, device=device)  # noqa: E731
        self.word = t(lambda s: s.strip() == "findings")
        self.colon = t(lambda s: s.strip() == ":")
        self.end = t(lambda s: "." in s or "\n" in s)
        self.name = t(lambda s: s.strip() not in ("", ",", ";", "none"))
        close = tokenizer.convert_tokens_to_ids("</think>")  # the id teacher forcing uses
        self.close = t(lambda s: False)
        if isinstance(close, int) and 0 <= close < len(text):
            self.close[close] = True
        self.reset(n, device)

    def reset(self, n: int, device: torch.device | str = "cpu") -> None:
        """Start ``n`` fresh rows (before the first completion token)."""
        self.think = torch.ones(n, dtype=torch.bool, device=device)
        self.after_word = torch.zeros(n, dtype=torch.bool, device=device)
        self.inside = torch.zeros(n, dtype=torch.bool, device=device)

    def feed(self, tok: Tensor) -> Tensor:
        """Read one token per row (``[N]``); ``[N]`` bool: it names a reasoning finding."""
        t = tok.clamp(0, len(self.word) - 1).to(self.word.device)
        known = (tok >= 0).to(t.device) & (tok < len(self.word)).to(t.device)
        end = self.end[t] | ~known
        out = self.think & self.inside & ~end & self.name[t]
        inside = (self.after_word & self.colon[t]) | (self.inside & ~end)
        self.after_word = self.word[t] & known
        self.think = self.think & ~(self.close[t] & known)
        self.inside = inside & self.think
        return out


def answer_finding_spans(text: str) -> list[tuple[int, int]]:
    """Character span of the answer's finding names (the ``findings:`` line after
    ``<answer>``), as a one-element list (empty when the text has no answer).

    >>> t = "<think>\\nx\\n</think>\\n<answer>\\nfindings: RA enlargement; healthy\\nreport:"
    >>> [t[a:b] for a, b in answer_finding_spans(t)]
    ['RA enlargement; healthy']
    """
    m = _ANSWER_FINDINGS.search(text)
    return [m.span(1)] if m else []


class AnswerSources:
    """Which completion tokens become the pointer's slots, and when, row by row.

    ``first_only=False`` (``lm.copy_answer_slots=mentions``): every name token of a reasoning
    findings list, as soon as it is read. ``first_only=True`` (``first``): each finding once, at
    its first mention: a name's tokens become slots together when its list item ends (the
    ``,`` or ``.`` after it), and only if the completed name is a taxonomy finding not named in
    an earlier item -- so the answer can read the reasoning's findings left to right without
    meeting one twice.

    :meth:`feed` takes one token per row and a payload per row (the position in a
    teacher-forced pass, the key and id while decoding) and returns, per row, the payloads that
    become slots now, in order; the two passes therefore build the same slots in the same order.
    """

    def __init__(self, tokenizer: Any, first_only: bool, device: torch.device | str = "cpu"
                 ) -> None:
        from echosonar.taxonomy import FINDING_BY_NAME

        self.tracker = FindingTracker(tokenizer, 0, device)
        self.first_only, self.decode = first_only, tokenizer.decode
        self.names = set(FINDING_BY_NAME)
        self.reset(0, device)

    def fresh(self) -> AnswerSources:
        """A rule with the same vocabulary tables and its own state (one per decoding)."""
        import copy

        other = copy.copy(self)
        other.tracker = copy.copy(self.tracker)
        other.reset(0, self.tracker.word.device)
        return other

    @property
    def thinking(self) -> Tensor:
        """``[N]`` bool: the next prediction is inside ``<think>`` (reads the prompt's slots;
        after ``</think>`` it reads the completion's)."""
        return self.tracker.think

    def reset(self, n: int, device: torch.device | str = "cpu") -> None:
        self.tracker.reset(n, device)
        self.cur: list[list[tuple[int, Any]]] = [[] for _ in range(n)]
        self.seen: list[set[str]] = [set() for _ in range(n)]

    def feed(self, tok: Tensor, payload: list[Any]) -> list[list[Any]]:
        name = self.tracker.feed(tok).tolist()
        if not self.first_only:
            return [[p] if m else [] for m, p in zip(name, payload, strict=True)]
        out: list[list[Any]] = []
        for r, (m, p) in enumerate(zip(name, payload, strict=True)):
            done: list[Any] = []
            if m:
                self.cur[r].append((int(tok[r]), p))
            elif self.cur[r]:  # the item ended with this token
                text = self.decode([t for t, _ in self.cur[r]]).strip()
                if text in self.names and text not in self.seen[r]:
                    self.seen[r].add(text)
                    done = [q for _, q in self.cur[r]]
                self.cur[r] = []
            out.append(done)
        return out


def teacher_forced_sources(rule: AnswerSources, ids: Tensor, mask: Tensor
                           ) -> tuple[list[list[tuple[int, int]]], Tensor]:
    """Run ``rule`` over whole completions ``ids`` ``[B, T]`` (``mask``: real tokens).

    Returns ``(rows, thinking)``: per row the ``(position, readable_from)`` of each slot, in
    slot order -- a slot made when token ``j`` is read can be read by the prediction of token
    ``j + 1`` on -- and ``thinking`` ``[B, T]`` bool, :attr:`AnswerSources.thinking` before
    each prediction (the phase the decoding loop reads it in)."""
    b, t = ids.shape
    rule.reset(b, ids.device)
    rows: list[list[tuple[int, int]]] = [[] for _ in range(b)]
    thinking = torch.zeros(b, t, dtype=torch.bool, device=ids.device)
    live = mask.bool()
    for j in range(t):
        thinking[:, j] = rule.thinking.to(ids.device)
        col = ids[:, j].masked_fill(~live[:, j], -1)
        for r, got in enumerate(rule.feed(col, [j] * b)):
            rows[r].extend((p, j + 1) for p in got)
    return rows, thinking


def completion_slots(keys: Tensor, ids: Tensor, rows: list[list[tuple[int, int]]]
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The completion's own slots for a teacher-forced pass over ``T`` tokens, compacted: row
    i's slots in order (:func:`teacher_forced_sources`), right-padded to the batch's most
    (K), so the pointer scores ``P + K`` slots instead of ``P + T`` -- a few dozen finding
    names instead of a whole completion. The decoding loop builds the same slots in the same
    order as it reads (``copy_head.CopyStep``).

    Args:
        keys: ``[B, T, d]`` the pointer keys of completion tokens 0..T-1 (from the hidden state
            after reading each).
        ids: ``[B, T]`` the tokens; ``rows``: per row, ``(position, readable_from)`` per slot.

    Returns ``(keys [B, K, d], ids [B, K], valid [B, T, K], real [B, K])``: position t
    (predicting token t) may read slot k from ``readable_from`` on; ``real`` marks slots that
    hold a token.

    >>> k, i, v, r = completion_slots(torch.zeros(1, 4, 2), torch.tensor([[5, 6, 7, 8]]),
    ...                               [[(1, 2), (3, 4)]])
    >>> i.tolist(), v[0].int().tolist()
    ([[6, 8]], [[0, 0], [0, 0], [1, 0], [1, 0]])
    """
    b, t = ids.shape
    k = max(1, max(len(r) for r in rows))
    pos = torch.zeros(b, k, dtype=torch.long, device=ids.device)
    start = torch.full((b, k), t + 1, dtype=torch.long, device=ids.device)
    for i, r in enumerate(rows):
        if r:
            pos[i, :len(r)] = torch.tensor([p for p, _ in r], device=ids.device)
            start[i, :len(r)] = torch.tensor([a for _, a in r], device=ids.device)
    real = start <= t
    ck = keys.gather(1, pos[..., None].expand(-1, -1, keys.shape[-1]))
    cid = ids.gather(1, pos).masked_fill(~real, 0)
    valid = start[:, None, :] <= torch.arange(t, device=ids.device)[None, :, None]
    return ck, cid, valid & real[:, None, :], real
