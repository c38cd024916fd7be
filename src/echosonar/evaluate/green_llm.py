"""Optional GREEN judge backed by a local causal LM (a GREEN checkpoint or any instruct model).

GREEN (Ostmeier et al., 2024, "GREEN: Generative Radiology Report Evaluation and Error
Notation") asks a judge LM to answer in a fixed format::

    [Explanation]:
    <text>

    [Clinically Significant Errors]:
    (a) False report of a finding in the candidate: <n>. <error 1>; ...
    (b) Missing a finding present in the reference: <n>. ...
    (c) Misidentification of a finding's anatomic location/position: <n>. ...
    (d) Misassessment of the severity of a finding: <n>. ...
    (e) Mentioning a comparison that isn't in the reference: <n>. ...
    (f) Omitting a comparison detailing a change from a prior study: <n>. ...

    [Clinically Insignificant Errors]:
    (a) ...: <n>. ...

    [Matched Findings]:
    <n>. <finding 1>; ...

and scores ``matched / (matched + sum of significant error counts)``, 0 when nothing matched.
:func:`build_prompt` writes an echocardiography version of that request (our wording, GREEN's
categories and output format, so a GREEN checkpoint understands it) and :func:`parse_response`
reads the counts back. The judge is loaded only from a local folder (no hub access).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ERROR_CATEGORIES: tuple[str, ...] = (
    "False report of a finding in the candidate",
    "Missing a finding present in the reference",
    "Misidentification of a finding's anatomic location/position",
    "Misassessment of the severity of a finding",
    "Mentioning a comparison that isn't in the reference",
    "Omitting a comparison detailing a change from a prior study",
)
ERROR_LETTERS = "abcdef"
SIGNIFICANT = "Clinically Significant Errors"
INSIGNIFICANT = "Clinically Insignificant Errors"
MATCHED = "Matched Findings"


def green_score(matched: int, significant_errors: Sequence[int]) -> float:
    """GREEN's formula; 0 when no finding matched (as the reference implementation does).

    >>> green_score(3, [1, 0, 0, 1, 0, 0])
    0.6
    >>> green_score(0, [0] * 6)
    0.0
    """
    if matched <= 0:
        return 0.0
    return matched / (matched + sum(significant_errors))


def build_prompt(reference: str, candidate: str) -> str:
    """The judge request for one report pair (plain text; chat templating is the caller's)."""
    cats = "\n".join(f"    {ERROR_LETTERS[i]}) {c}." for i, c in enumerate(ERROR_CATEGORIES))
    fmt_errs = "\n".join(f"    ({ERROR_LETTERS[i]}) {c}: <number of errors>. <error 1>; ...; "
                         f"<error n>" for i, c in enumerate(ERROR_CATEGORIES))
    return (
        "Objective: judge how accurately a candidate echocardiography report states the "
        "findings of a reference report written by an expert echocardiographer.\n\n"
        "    1. Criteria. Count the clinically significant and the clinically insignificant "
        "errors of the candidate. Each error belongs to one category:\n"
        f"{cats}\n"
        "    Judge the clinical findings (chamber size, systolic function, wall thickness, "
        "valve disease and its severity, pericardial effusion), not the writing style.\n\n"
        f"    2. Reference Report:\n    {reference}\n\n"
        f"    3. Candidate Report:\n    {candidate}\n\n"
        "    4. Answer in exactly this format, even when there are no errors:\n"
        "    ```\n"
        "    [Explanation]:\n    <Explanation>\n\n"
        f"    [{SIGNIFICANT}]:\n{fmt_errs}\n\n"
        f"    [{INSIGNIFICANT}]:\n{fmt_errs}\n\n"
        f"    [{MATCHED}]:\n    <number of matched findings>. <finding 1>; ...; <finding n>\n"
        "    ```\n")


@dataclass
class JudgeResult:
    """Counts read from one judge response. ``parsed`` is False when a required block is
    missing (then ``score`` is None: an unreadable judgement is not a zero)."""

    significant: list[int] = field(default_factory=lambda: [0] * 6)
    insignificant: list[int] = field(default_factory=lambda: [0] * 6)
    matched: int = 0
    parsed: bool = True
    explanation: str = ""

    @property
    def score(self) -> float | None:
        return green_score(self.matched, self.significant) if self.parsed else None


def _block(text: str, name: str) -> str | None:
    m = re.search(rf"\[{re.escape(name)}\]:\s*(.*?)(?=\n\s*\[[A-Z][^\]]*\]:|\Z)", text, re.S)
    return m.group(1).strip() if m else None


def _category_counts(body: str) -> list[int]:
    counts = [0] * 6
    if body.lower().startswith("no"):
        return counts
    for line in body.splitlines():
        m = re.match(r"\s*\(?([a-f]|[1-6])\)\s*[^:\n]*:\s*(\d+)", line.strip())
        if m:
            key = m.group(1)
            i = ERROR_LETTERS.index(key) if key.isalpha() else int(key) - 1
            counts[i] = int(m.group(2))
    return counts


def parse_response(text: str) -> JudgeResult:
    """Read a GREEN-format response (tolerates chat prefixes and a code fence).

    >>> r = parse_response("[Explanation]:\\nok\\n\\n[Clinically Significant Errors]:\\n"
    ...                    "(a) False report of a finding in the candidate: 1. AS.\\n"
    ...                    "(d) Misassessment of the severity of a finding: 2. MR; TR\\n\\n"
    ...                    "[Clinically Insignificant Errors]:\\nNo errors.\\n\\n"
    ...                    "[Matched Findings]:\\n3. LVE; LAE; MR")
    >>> r.significant, r.matched, round(r.score, 3)
    ([1, 0, 0, 2, 0, 0], 3, 0.5)
    """
    text = text.replace("```", "")
    if "[Explanation]:" in text:
        text = text[text.index("[Explanation]:"):]
    sig, insig, matched = (_block(text, n) for n in (SIGNIFICANT, INSIGNIFICANT, MATCHED))
    expl = _block(text, "Explanation") or ""
    if sig is None or matched is None:
        return JudgeResult(parsed=False, explanation=expl)
    m = re.match(r"\s*(\d+)\s*\.", matched)
    n_matched = int(m.group(1)) if m else 0
    return JudgeResult(significant=_category_counts(sig),
                       insignificant=_category_counts(insig or ""),
                       matched=n_matched, parsed=True, explanation=expl)


class LLMJudge:
    """GREEN judge from a local model folder (``transformers`` AutoModelForCausalLM).

    ``judge(references, candidates)`` returns :class:`JudgeResult` s; greedy decoding.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_new_tokens: int = 512,
                 batch_size: int = 4) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"judge model folder {model_dir} has no config.json "
                                    "(a local transformers checkpoint is required)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, use_safetensors=True).to(device).eval()
        self.device, self.max_new_tokens, self.batch_size = device, max_new_tokens, batch_size

    def _text(self, prompt: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": prompt}],
                                                tokenize=False, add_generation_prompt=True)
        return prompt

    def judge(self, references: Sequence[str], candidates: Sequence[str]) -> list[JudgeResult]:
        import torch

        out: list[JudgeResult] = []
        pairs = list(zip(references, candidates, strict=True))
        for i in range(0, len(pairs), self.batch_size):
            chunk = [self._text(build_prompt(r, c)) for r, c in pairs[i:i + self.batch_size]]
            enc = self.tok(chunk, return_tensors="pt", padding=True).to(self.device)
            with torch.no_grad():
                ids = self.model.generate(**enc, do_sample=False,
                                          max_new_tokens=self.max_new_tokens,
                                          pad_token_id=self.tok.pad_token_id)
            texts = self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                          skip_special_tokens=True)
            out.extend(parse_response(t) for t in texts)
        return out


def summarize(results: Sequence[JudgeResult]) -> dict[str, Any]:
    """Mean score over parsed responses, error totals per category, parse failures."""
    ok = [r for r in results if r.parsed]
    return {
        "green_llm": (sum(r.score for r in ok) / len(ok)) if ok else None,  # type: ignore[misc]
        "n": len(results), "unparsed": len(results) - len(ok),
        "significant_errors": {ERROR_LETTERS[i]: sum(r.significant[i] for r in ok)
                               for i in range(6)},
        "matched": sum(r.matched for r in ok),
    }
