"""Guided decoding: the text contract's skeleton is forced, the decisions come from the label
head, the language model writes everything else.

Why. The free-running 2 M-parameter LM learns the format and the report but not the decision:
its answer ignores measurements the label head reads well (session-4 notes: answer 54.5 % macro
BAcc, head 76.8 % on the same model), and most of its malformed outputs are duplicated or
unknown finding names in a ``findings:`` list. Guided decoding keeps every free-text part of the
generation (evidence, implications, report sections) as the LM's greedy choice and writes only
what the contract fixes:

* the tags, the ``view V:`` prefixes in ``taxonomy.VIEWS`` order (the training targets' order),
  and the whole line of a view that was not acquired (``not assessable:`` is a function of the
  acquired views, as in the targets);
* each acquired view's ``structures`` list: the detector's boxes for that view, verbatim, in
  ``taxonomy.STRUCTURES`` order (the targets cite every structure present; the LM only ever
  copied them from the prompt, and a garbled copy was the commonest malformation left);
* every ``findings:`` list: the head's calls ``score >= threshold`` (per-label thresholds, e.g.
  chosen on the val split) among the findings some acquired view can show (the rest are "not
  assessable", as the not-acquired lines say), restricted per view to the findings that view
  can show -- the rule that writes the SFT targets, so reasoning and answer agree by
  construction;
* the report's section titles, in order, then ``</answer>`` and EOS.

The decisions are therefore the auxiliary head's, made from the prompt before any token is
written; the LM's free text after each ``findings:`` list (implications, report) is conditioned
on them. Free segments open with a word, may not contain tags or EOS, a line break ends them, and
each has a token cap after which the skeleton moves on. Greedy only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from echosonar.taxonomy import (
    FINDINGS,
    HEALTHY,
    LABEL_KEYS,
    REPORT_SECTION_TITLES,
    REPORT_SECTIONS,
    STRUCTURES,
    VIEWS,
    assessable,
)
from echosonar.textformat import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    NONE,
    THINK_CLOSE,
    THINK_OPEN,
    citations_text,
    render_view_line,
)

#: token caps of the free segments, a little above the longest training-target segment (in
#: 400 train targets of the 1,419-study cache: evidence 76, implication 28, report section 55
#: tokens); a model that runs on past them is off the rails, not saying more
EVIDENCE_CAP, IMPLICATION_CAP, SECTION_CAP = 80, 32, 64


def decisions(scores: Sequence[float], thresholds: Mapping[str, float]) -> list[str]:
    """Finding keys called by the head: ``scores`` in ``LABEL_KEYS`` order, a finding is called
    when its score reaches its threshold (``healthy`` is never a decision: it means none).

    >>> decisions([0.9] + [0.1] * 13, {k: 0.5 for k in LABEL_KEYS})
    ['lv_systolic_dysfunction']
    """
    called = {k for k, s in zip(LABEL_KEYS, scores, strict=True)
              if k != HEALTHY.key and float(s) >= float(thresholds.get(k, 0.5))}
    return [f.key for f in FINDINGS if f.key in called]


def view_findings_text(view: str, called: Sequence[str]) -> str:
    """The ``findings:`` list of one acquired view: called findings that view can show.

    >>> view_findings_text("A4C_COLOR", ["tricuspid_regurgitation", "aortic_regurgitation"])
    'tricuspid regurgitation'
    >>> view_findings_text("PSAX_AV", ["tricuspid_regurgitation"])
    'none'
    """
    names = [f.name for f in FINDINGS if f.key in called and view in f.views]
    return ", ".join(names) or NONE


def answer_findings_text(called: Sequence[str]) -> str:
    """The answer's finding list (``healthy`` when nothing is called)."""
    return "; ".join(f.name for f in FINDINGS if f.key in called) or HEALTHY.name


def citations(boxes: Mapping[str, Sequence[float]]) -> str:
    """A view's ``structures`` list from detector boxes, in ``STRUCTURES`` order.

    >>> citations({"LA": [0.4, 0.6, 0.6, 0.9], "LV": [0.1, 0.1, 0.5, 0.6]})
    'LV (10,10,50,60), LA (40,60,60,90)'
    >>> citations({})
    'none'
    """
    return citations_text({s: list(boxes[s]) for s in STRUCTURES if s in boxes})


def not_acquired_line(view: str, acquired: Sequence[str]) -> str:
    """The whole reasoning line of a view that was not acquired (as the targets write it)."""
    na = [f.name for f in FINDINGS if view in f.views and not assessable(f.key, tuple(acquired))]
    return render_view_line(view, None, not_assessable=na)


@dataclass
class _Row:
    """Decoding state of one study."""

    acquired: list[str]
    called: list[str]
    views: deque = field(default_factory=deque)  # views still to write
    queue: deque = field(default_factory=deque)  # forced token ids
    boxes: dict = field(default_factory=dict)  # {view: {structure: box01}} of the detector
    mode: str = "start"  # start | evidence | implication | report | closing | done
    view: str = ""
    section: int = 0
    line: str = ""  # text of the current line so far
    n_free: int = 0  # tokens in the current free segment


class GuidedDecoder:
    """A ``choose(logits) -> tokens`` controller for ``decode.sample_completions``.

    Per step, the rows that need the LM (in a free segment, nothing queued) get their token from
    one masked argmax over all of them; the rest is bookkeeping on Python ints. When every row
    still has forced tokens queued, the common run is returned at once (``[B, k]``) and the
    model reads it in one step: the skeleton, citations and findings lists cost one step each,
    not one per token.

    Args:
        tokenizer: the model's HF tokenizer (``encode``, ``decode``, eos/pad ids).
        acquired: per study, the acquired views.
        called: per study, the finding keys the head calls (:func:`decisions`).
        boxes: per study, ``{view: {structure: [x0, y0, x1, y1] in 0..1}}`` (the detector's
            ``ViewFeatures.boxes``); missing -> ``structures none``.
        runs: return forced runs as one ``[B, k]`` block (False: one token per step).
    """

    def __init__(self, tokenizer: Any, acquired: Sequence[Sequence[str]],
                 called: Sequence[Sequence[str]],
                 boxes: Sequence[Mapping[str, Mapping[str, Sequence[float]]]] | None = None,
                 runs: bool = True):
        self.tok, self.runs = tokenizer, runs
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.text = _token_texts(tokenizer)
        n = len(self.text)
        ban = torch.zeros(n, dtype=torch.bool)
        specials = set(tokenizer.all_special_ids) | {
            tokenizer.convert_tokens_to_ids(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN,
                                                         ANSWER_CLOSE)}
        ban[[i for i in specials if i is not None and 0 <= i < n]] = True
        # the parser splits lines at every str.splitlines() boundary ("\r", "\x1d", "\u2028"
        # ...): only "\n" may end a line, as the skeleton's line break; byte fragments of a
        # character (decoded alone as U+FFFD) could spell such a boundary together
        ban |= torch.tensor([len(("." + t.replace("\n", "") + ".").splitlines()) > 1
                             or "\ufffd" in t for t in self.text])
        newline = torch.tensor(["\n" in t for t in self.text])
        word = torch.tensor([t.startswith(" ") and bool(t.strip()) for t in self.text])
        findings = torch.tensor(["findings" in t for t in self.text])
        # what the LM may not write, by kind of step: tags, EOS and other special tokens never
        # (FREE); nor a line break where the line must go on (LINE); a segment starts with
        # " word", not with the end of the evidence (FIRST)
        self.bans = torch.stack([ban, ban | newline, ban | newline | ~word | findings])
        boxes = boxes if boxes is not None else [{} for _ in acquired]
        self.rows = [_Row(list(a), list(c), views=deque(VIEWS), boxes=dict(b))
                     for a, c, b in zip(acquired, called, boxes, strict=True)]

    # ----------------------------------------------------------------- the skeleton
    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _next_view(self, r: _Row) -> str:
        """Forced text that opens the next acquired view (after any not-acquired lines), or
        closes the reasoning and opens the report when no view is left."""
        parts = []
        while r.views:
            v = r.views.popleft()
            if v not in r.acquired:
                parts.append(not_acquired_line(v, r.acquired) + "\n")
                continue
            r.mode, r.view = "evidence", v
            return "".join(parts) + f"view {v}: structures {citations(r.boxes.get(v, {}))}. " \
                "evidence:"
        r.mode, r.section = "report", 0
        return "".join(parts) + "\n".join([
            THINK_CLOSE, ANSWER_OPEN, "findings: " + answer_findings_text(r.called), "report:",
            REPORT_SECTION_TITLES[REPORT_SECTIONS[0]] + ":"])

    def _force(self, r: _Row, text: str, then_eos: bool = False) -> int:
        ids = self._encode(text) + ([self.eos] if then_eos else [])
        r.queue.extend(ids[1:])
        r.n_free = 0
        return ids[0]

    # ----------------------------------------------------------------- one step
    def needs_lm(self, i: int) -> bool:
        """Whether row ``i``'s next token is the LM's (a free segment, nothing queued)."""
        r = self.rows[i]
        return not r.queue and r.mode in ("evidence", "implication", "report")

    def __call__(self, logits: Tensor) -> Tensor:
        """``logits [B, V]`` of this step -> chosen tokens ``[B]``, or ``[B, k]`` when every
        unfinished row has a forced run of at least k tokens."""
        need = [i for i in range(len(self.rows)) if self.needs_lm(i)]
        free: dict[int, int] = {}
        if need:  # one masked argmax for every row the LM speaks for
            kind = [2 if self.rows[i].n_free == 0 else 1 if self.rows[i].mode == "evidence"
                    else 0 for i in need]
            table = self._bans(logits.shape[-1], logits.device)
            bans = table[kind[0]] if len(kind) == 1 else table[torch.tensor(kind)]
            sub = logits[need] if len(need) < len(self.rows) else logits
            picks = sub.float().masked_fill(bans, float("-inf")).argmax(-1).tolist()
            free = dict(zip(need, picks, strict=True))
        out = []
        for i, r in enumerate(self.rows):
            t = self._step(r, free.get(i))
            self._advance(r, t)
            out.append([t])
        live = [r for r in self.rows if r.mode != "done"]
        k = min((len(r.queue) for r in live), default=0) if self.runs else 0
        for r, row in zip(self.rows, out, strict=True):
            for _ in range(k if r.mode != "done" else 0):
                t = r.queue.popleft()
                self._advance(r, t)
                row.append(t)
            row.extend([self.pad] * (k + 1 - len(row)))
        return torch.tensor(out, dtype=torch.long, device=logits.device).squeeze(1)

    def _bans(self, width: int, device: torch.device) -> Tensor:
        """The ban table padded to the logits' width (ids past the tokenizer: banned)."""
        if self.bans.shape[1] != width or self.bans.device != device:
            pad = torch.ones(3, max(0, width - self.bans.shape[1]), dtype=torch.bool)
            self.bans = torch.cat([self.bans[:, :width], pad], 1).to(device)
        return self.bans

    def _step(self, r: _Row, t: int | None) -> int:
        """Row ``r``'s token this step; ``t`` is the LM's (masked) choice when it needs one."""
        if r.mode == "start":
            return self._force(r, THINK_OPEN + "\n" + self._next_view(r))
        if r.queue:
            return r.queue.popleft()
        if r.mode == "done" or t is None:
            return self.pad
        txt = self.text[t]
        r.n_free += 1
        if r.mode == "evidence":
            # the LM moving on to "findings" (or running past the cap) ends the evidence; the
            # findings list is the head's, whatever the LM was about to write
            if "findings" not in txt and r.n_free < EVIDENCE_CAP:
                return t
            head = txt.split("findings", 1)[0].rstrip() if "findings" in txt else txt
            dot = "" if (r.line + head).rstrip().endswith(".") else "."
            r.mode = "implication"
            return self._force(r, f"{head}{dot} findings: "
                               f"{view_findings_text(r.view, r.called)}. implication:")
        ends = "\n" in txt
        cap = IMPLICATION_CAP if r.mode == "implication" else SECTION_CAP
        if not ends and r.n_free < cap:
            return t
        head = txt.split("\n", 1)[0]
        if r.mode == "implication":
            dot = "" if (r.line + head).rstrip().endswith(".") else "."
            return self._force(r, head + dot + "\n" + self._next_view(r))
        r.section += 1
        if r.section < len(REPORT_SECTIONS):
            return self._force(r, head + "\n" + REPORT_SECTION_TITLES[
                REPORT_SECTIONS[r.section]] + ":")
        r.mode = "closing"
        return self._force(r, head + "\n" + ANSWER_CLOSE, then_eos=True)

    def _advance(self, r: _Row, t: int) -> None:
        if t == self.eos:
            r.mode = "done"
            r.queue.clear()
            return
        txt = self.text[t] if 0 <= t < len(self.text) else ""
        r.line = (r.line + txt).rsplit("\n", 1)[-1]


def _token_texts(tokenizer: Any) -> list[str]:
    """Decoded text of every token id (cached on the tokenizer object)."""
    cached = getattr(tokenizer, "_echosonar_token_texts", None)
    if cached is not None and len(cached) == len(tokenizer):
        return cached
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in range(len(tokenizer))]
    try:
        tokenizer._echosonar_token_texts = texts
    except AttributeError:  # some tokenizer objects refuse new attributes; recompute then
        pass
    return texts


def guided_generate(model: Any, batch: Sequence[Any], thresholds: Mapping[str, float],
                    max_new_tokens: int, engine: str = "auto", runs: bool = True
                    ) -> tuple[list[str], list[list[str]], Tensor]:
    """Guided greedy generations for ``batch`` (``StudyFeatures``): ``(texts, called,
    scores)`` where ``called`` are the head's assessable finding keys per study and
    ``scores`` ``[B, L]`` the label head's probabilities they come from. ``model`` is an
    ``EchoSonarR``; ``engine`` picks the decode step (``decode.make_step``), ``runs`` feeds
    forced runs in one step (:class:`GuidedDecoder`)."""
    from echosonar.reason.decode import sample_completions

    batch = list(batch)
    with torch.no_grad():
        # one pass over the prompts: the label head's states, the copy head's keys, the cache
        embeds, mask, pre, step = model.decode_inputs(batch, engine, hidden=True)
        probs = model.label_scores(batch, (pre.hidden, mask))
        acquired = [[v.view for v in sf.views] for sf in batch]
        # a finding no acquired view can show is "not assessable", not called
        called = [[k for k in decisions(s, thresholds) if assessable(k, tuple(a))]
                  for s, a in zip(probs.float().cpu().tolist(), acquired, strict=True)]
        boxes = [{v.view: dict(v.boxes) for v in sf.views} for sf in batch]
        dec = GuidedDecoder(model.tokenizer, acquired, called, boxes, runs=runs)
        budget = min(max_new_tokens, model.config.max_len - embeds.shape[1])
        if budget <= 0:
            return [""] * len(batch), called, probs
        ids, keep, _ = sample_completions(
            model.lm, embeds, mask, num_samples=1, max_new_tokens=budget,
            eos_token_id=model.eos_id, pad_token_id=model.pad_id, do_sample=False, choose=dec,
            engine=step, prefilled=pre)
    texts = [model.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
             for row, m in zip(ids.cpu(), keep.cpu(), strict=True)]
    return texts, called, probs
