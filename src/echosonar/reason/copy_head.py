"""The copy (pointer) head of EchoSonar-R: the LM can copy a token of its prompt's text.

Why. A reasoning line cites the detector's boxes and measurements, which the prompt prints as
text. Trained from scratch on a few hundred studies, the 2 M-parameter LM did not learn to copy
them (the copy probe, docs/notes/reason.md: 0.4 % of boxes and 18 % of numbers exact after 300
steps -- it writes plausible values, not the prompt's). A pointer-generator (See et al., 2017)
gives copying its own path: at completion position t, with final hidden state ``h_t`` (after the
LM's last norm),

    a_t = softmax_j(q(h_t) . k(h_j) / sqrt(d))        over the prompt's text tokens j
    p_copy(y) = sum_{j: x_j = y} a_tj
    p(y) = (1 - g_t) softmax(logits_t)(y) + g_t p_copy(y),   g_t = sigmoid(w . h_t + b)

so the model learns *where* to look (which view block, which structure) and the value comes
with the pointer, instead of an attention head and an output map both having to form. Trained
on the mixture alone, the pointer starves: at the start its attention is spread over a few
hundred prompt tokens, the generator's prior beats it and the gate closes. So SFT adds the
pointer's own loss (``sft.copy_loss_weight``): on every number token of a view's reasoning
line that occurs in that view's prompt block, ``-log`` of the attention on the block's tokens
with that value -- so the pointer learns to look in the right view (a box corner or a zero
occurs in every block), whatever the gate does -- plus a binary cross-entropy that opens the
gate exactly on those tokens. With ``lm.copy_follow`` the pointer also gets CopyNet's
"selective read" as a learned bonus: the slot right after the one it read one or two tokens
ago (``(39,12,`` and ``4.78`` are read left to right), so it need not re-derive from context
which corner of a box or which digit group comes next. What may be copied is
``lm.copy_tokens``: ``evidence`` (default) every token of each view block's boxes and
measurements text (``PromptParts.cite_spans``), names included, supervised on the tokens of a
reasoning line's citations (``textformat.citation_spans``) -- with ``numbers`` (number tokens
only; the tokenizer keeps digits in runs of at most two) the generator wrote the names around
the copied values and got them wrong (``MV`` cited twice, ``la_ap_pct`` for ``la_ap_cm``).
With ``lm.copy_answer`` the pointer also reads the completion's own reasoning
findings, so the answer can restate them (:mod:`echosonar.reason.answer_copy`).
Vision placeholders, padding and special tokens are never copied. The mixture's log-probabilities
stand in for logits everywhere (SFT loss, the decoding loop, GRPO log-probs): ``softmax`` of
log-probabilities returns the same distribution, so samplers, masks and temperature work
unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fp32(x: Tensor):
    """The pointer's arithmetic stays in fp32 under autocast (bf16 SFT on a CPU, CUDA): its
    softmax over the prompt and the log-mixture need the range, and the head is tiny."""
    return torch.autocast(x.device.type, enabled=False)


def per_position(valid: Tensor) -> Tensor:
    """A copy mask as ``[B, T or 1, P]``: ``[B, P]`` (the same slots for every position) gains
    the position axis; ``[B, T, P]`` is returned as it is."""
    return valid if valid.dim() == 3 else valid[:, None, :]


class CopyHead(nn.Module):
    """Pointer over prompt tokens, mixed into the next-token distribution.

    Args:
        hidden: the LM's hidden size H.
        dim: query/key width d.
        gate_bias: initial bias of the copy gate (negative: start mostly generating).
    """

    def __init__(self, hidden: int, dim: int = 64, gate_bias: float = -1.0,
                 follow: bool = False) -> None:
        super().__init__()
        self.q = nn.Linear(hidden, dim, bias=False)
        self.k = nn.Linear(hidden, dim, bias=False)
        self.gate = nn.Linear(hidden, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, gate_bias)
        self.scale = 1.0 / math.sqrt(dim)
        # "selective read": a learned bonus for the prompt slot right after the one the pointer
        # read one / two tokens ago (a box "(39,12," or a value "4.78" is read left to right)
        self.follow = nn.Parameter(torch.zeros(2)) if follow else None
        #: shut the gate where no slot may be read (set with ``lm.copy_answer``, whose answer
        #: reads only the reasoning; without it every prompt has slots and nothing changes)
        self.shut_when_empty = False

    def scores(self, h: Tensor, keys: Tensor) -> Tensor:
        """``[B, T, P]`` content scores of the pointer (before masking and the follow bonus)."""
        with _fp32(h):
            return torch.einsum("btd,bpd->btp", self.q(h.float()), keys.float()) * self.scale

    @staticmethod
    def attend(s: Tensor, valid: Tensor) -> Tensor:
        """Softmax of scores ``[B, T, P]`` over the copyable slots ``valid`` (``[B, P]``, or
        ``[B, T, P]`` when what may be copied depends on the position, as the completion's own
        slots do); a row with nothing to copy is all zero."""
        return torch.nan_to_num(s.masked_fill(~per_position(valid), float("-inf")).softmax(-1),
                                nan=0.0)

    def keys(self, prompt_hidden: Tensor) -> Tensor:
        """``[B, P, H]`` final hidden states of the prompt -> keys ``[B, P, d]``."""
        with _fp32(prompt_hidden):
            return self.k(prompt_hidden.float())

    def log_probs(self, h: Tensor, logits: Tensor, keys: Tensor, ids: Tensor, valid: Tensor,
                  with_copy: bool = False, history: tuple[Tensor, Tensor] | None = None,
                  scores: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """Log-probabilities of the mixture.

        Args:
            h: ``[B, T, H]`` (or ``[B, H]``) final hidden states at the predicting positions.
            logits: ``[B, T, V]`` (or ``[B, V]``) the LM head's logits there.
            keys: ``[B, P, d]`` from :meth:`keys`; ``ids`` ``[B, P]`` the token ids of the
                slots (the prompt's, then with ``lm.copy_answer`` the completion's own);
                ``valid`` ``[B, P]`` bool, True where a slot may be copied (``[B, T, P]`` for
                3-D input when it depends on the position: a completion slot only after it).
            history: flat (decoding) input only, with ``follow``: the content attentions
                ``[B, P]`` of the previous two predictions (:meth:`attend` of :meth:`scores`),
                most recent first (zeros when None); a 3-D input takes them from its own
                earlier positions.
            scores: :meth:`scores` of ``h`` when the caller has them already (``[B, T, P]``,
                also for flat input: ``[B, 1, P]``).

        Returns ``[B, T, V]`` (or ``[B, V]``) float32 log-probabilities; with ``with_copy``
        also the pointer's attention ``[B, T, P]`` and the gate's logit ``[B, T]`` (without the
        T axis for flat input), for their own losses.
        """
        with _fp32(h):
            return self._log_probs(h, logits, keys, ids, valid, with_copy, history, scores)

    def _log_probs(self, h, logits, keys, ids, valid, with_copy, history, scores):  # noqa: ANN001
        """:meth:`log_probs` with autocast off (see :func:`_fp32`)."""
        flat = h.dim() == 2
        if flat:
            h, logits = h[:, None], logits[:, None]
        h = h.float()
        s = self.scores(h, keys) if scores is None else scores.float()
        if self.follow is not None:
            a0 = None if flat else self.attend(s, valid)
            for k in (1, 2):
                if not flat:  # position t reads the content attention of position t - k
                    prev = F.pad(a0, (0, 0, k, 0))[:, :a0.shape[1]]
                elif history is not None:
                    prev = history[k - 1][:, None]
                else:
                    prev = torch.zeros_like(s)
                nxt = F.pad(prev, (k, 0))[..., :s.shape[-1]]  # slot j gets slot j - k's mass
                s = s + self.follow[k - 1] * torch.log(nxt + 1e-3)
        a = self.attend(s, valid)
        pc = logits.new_zeros(logits.shape, dtype=torch.float32).scatter_add_(
            -1, ids[:, None, :].expand(-1, h.shape[1], -1), a)
        gl = self.gate(h)  # [B, T, 1]
        if self.shut_when_empty:
            # nothing to read here (the answer of a reasoning that found nothing): the gate is
            # shut, so the mixture is the generator's distribution and still sums to one
            empty = ~per_position(valid).any(-1)  # [B, T] (or [B, 1])
            gl = gl.masked_fill(empty[..., None], -30.0)
        lp = torch.logaddexp(F.logsigmoid(-gl) + F.log_softmax(logits.float(), -1),
                             F.logsigmoid(gl) + torch.log(pc.clamp_min(1e-30)))
        gl = gl[..., 0]
        if flat:
            lp, a, gl = lp[:, 0], a[:, 0], gl[:, 0]
        return (lp, a, gl) if with_copy else lp


def pointer_nll(attn: Tensor, gate: Tensor, tgt: Tensor, tmask: Tensor, tseg: Tensor,
                ids: Tensor, copyable: Tensor, seg: Tensor) -> Tensor:
    """The copy head's own SFT loss (summed over the batch).

    ``-log`` of the pointer's attention on the copyable slots that carry the target token's id
    *in the segment the target token reads from* (a reasoning line: its view's prompt block; an
    answer finding with ``lm.copy_answer``: the reasoning's findings, ``answer_copy.SELF``), over
    the target tokens that have such a source; plus the gate's binary cross-entropy against
    "this token has such a source", over every target token.

    Args:
        attn: ``[B, T, P]`` the pointer's attention (packed prompt positions, then any
            completion slots); ``gate`` ``[B, T]`` its gate logits.
        tgt, tmask: ``[B, T]`` target ids and mask.
        tseg: ``[B, T]`` each target token's source segment (``reason.targets.target_segments``;
            0 = no source wanted there).
        ids, seg: ``[B, P]`` the slots' ids and segments; ``copyable`` ``[B, P]`` (or
            ``[B, T, P]``: what target token t may copy) the copy mask.
    """
    src = ((ids[:, None, :] == tgt[:, :, None]) & (seg[:, None, :] == tseg[:, :, None])
           & per_position(copyable))
    src &= (tseg > 0)[:, :, None] & tmask.bool()[:, :, None]
    has = src.any(-1)
    p_src = (attn * src).sum(-1).clamp_min(1e-30)
    gate_bce = F.binary_cross_entropy_with_logits(gate, has.float(), reduction="none")
    return -(torch.log(p_src) * has).sum() + (gate_bce * tmask).sum()


class CopyStep:
    """A decode step (``decode.make_step``'s interface) whose logits are the copy mixture's
    log-probabilities. ``inner`` must expose ``last_hidden`` ``[N, H]`` (the final normed hidden
    state of the token it just read); the prompt's keys, ids and copy mask are per study and
    repeated for its G rows at prefill; ``h0`` ``[B, H]`` is the prompt's last hidden state.

    ``tracker`` (``lm.copy_answer``: an :class:`~echosonar.reason.answer_copy.AnswerSources`)
    makes the tokens the step reads that name a reasoning finding slots too, in reading order
    -- the same slots, keys and masks as the teacher-forced pass
    (``EchoSonarR._completion_logprobs_packed``). Tokens of a forced run (k > 1 read at once,
    guided decoding) get no slot: only the run's last token has a hidden state."""

    def __init__(self, inner, head: CopyHead, keys: Tensor, ids: Tensor, valid: Tensor,
                 h0: Tensor, tracker: Any = None) -> None:
        self.inner, self.head = inner, head
        self.keys, self.ids, self.valid, self.h0 = keys, ids, valid, h0
        self.tracker = tracker

    def prefill(self, embeds: Tensor, mask: Tensor, g: int, budget: int,
                prefilled: Any = None) -> Tensor:
        """The inner step's prefill (``prefilled``: a ``decode.Prefill`` to reuse), then the
        first mixture ``[B * G, V]``."""
        logits = self.inner.prefill(embeds, mask, g, budget, prefilled=prefilled)
        if self.tracker is not None:
            self.tracker.reset(logits.shape[0], logits.device)
            self._p = self.keys.shape[1]  # the prompt's slots; completion slots follow
            self._used = [0] * logits.shape[0]  # completion slots filled per row
        self.keys, self.ids, self.valid, h0 = (x.repeat_interleave(g, 0) for x in (
            self.keys, self.ids, self.valid, self.h0))
        zero = self.valid.new_zeros(self.valid.shape, dtype=torch.float32)
        self.history = (zero, zero)
        return self._mix(h0, logits, 1)

    def __call__(self, tok: Tensor) -> Tensor:
        logits = self.inner(tok)
        h = self.inner.last_hidden
        if self.tracker is not None:
            self._grow(tok, h)
        return self._mix(h, logits, tok.shape[1])

    def _grow(self, tok: Tensor, h: Tensor) -> None:
        """Read the ``k`` tokens just fed (``tracker``: ``answer_copy.AnswerSources``) and append
        the slots they complete to each row's completion slots, in order -- the compacted layout
        of ``answer_copy.completion_slots``. Tokens inside a forced run have no hidden state (no
        key) and never become slots."""
        n, k = tok.shape
        key = self.head.keys(h)  # [N, d]: the key of each row's last token
        last = tok[:, -1].tolist()  # one device sync a step, not one a row
        for i in range(k):
            pay = [(key[r], last[r]) if i == k - 1 else None for r in range(n)]
            got = self.tracker.feed(tok[:, i], pay)
            if not any(got):
                continue
            got = [[x for x in row if x is not None] for row in got]
            need = max(u + len(g) for u, g in zip(self._used, got, strict=True))
            if self._p + need > self.keys.shape[1]:  # room for at least 16 more
                w = max(16, self._p + need - self.keys.shape[1])
                self.keys = F.pad(self.keys, (0, 0, 0, w))
                self.ids = F.pad(self.ids, (0, w))
                self.valid = F.pad(self.valid, (0, w))
                if self.head.follow is not None:
                    self.history = tuple(F.pad(x, (0, w)) for x in self.history)
            for r, row in enumerate(got):
                for kk, tid in row:
                    at = self._p + self._used[r]
                    self.keys[r, at] = kk.to(self.keys.dtype)
                    self.ids[r, at] = tid
                    self.valid[r, at] = True
                    self._used[r] += 1

    def _mix(self, h: Tensor, logits: Tensor, fed: int) -> Tensor:
        if self.head.follow is None:
            return self.head.log_probs(h, logits, self.keys, self.ids, self._phase_valid())
        if fed > 1:  # a forced run: the predictions inside it were never made
            zero = torch.zeros_like(self.history[0])
            self.history = (zero, zero)
        valid = self._phase_valid()
        s = self.head.scores(h[:, None], self.keys)  # once: the mixture and the history
        out = self.head.log_probs(h, logits, self.keys, self.ids, valid,
                                  history=self.history, scores=s)
        self.history = (self.head.attend(s, valid)[:, 0], self.history[0])
        return out

    def _phase_valid(self) -> Tensor:
        """The copy mask for the next prediction: with answer copying, the prompt's slots
        inside ``<think>`` and the completion's own after it (as the teacher-forced pass)."""
        if self.tracker is None:
            return self.valid
        think = self.tracker.thinking.to(self.valid.device)[:, None]
        own = torch.arange(self.valid.shape[1], device=self.valid.device)[None] >= self._p
        return self.valid & torch.where(own, ~think, think)
