"""MIMIC-EchoQA adapter: load the release's question file and score multiple-choice answers.

MIMIC-EchoQA (PhysioNet, credentialed: "MIMIC-IV-ECHO-Ext-MIMICEchoQA", v1.0.0) ships
``MIMICEchoQA/MIMICEchoQA.json``: a JSON list of records such as::

    {"messages_id": "...", "videos": ["mimic-iv-echo/0.1/files/p13/p13265185/s97751020/
     97751020_0026.mp4"], "question": "...", "option_A": "...", "option_B": "...",
     "option_C": "...", "option_D": "...", "answer": "<text of the correct option>",
     "correct_option": "B", "structure": "Mitral Valve", "view": "A4C"}

The field names above are the ones public evaluation scripts read from that file. The same
records are also distributed as JSON Lines with a single ``"video"`` path; both are accepted.
Yes/no questions have empty option fields and ``answer`` "Yes"/"No". The study is taken from a
``study_id`` field when present, else from the ``s<digits>`` folder of the first video path.
No data ships with EchoSonar; the tests build a small file in this format.

Scoring: a prediction is the model's raw text (or a bare letter); :func:`parse_choice` maps it to
an option letter (``A``-``D``) or ``Yes``/``No``. Accuracy and balanced accuracy (scikit-learn,
mean recall over the true answer classes) are reported overall and per ``structure`` group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OPTIONS = ("A", "B", "C", "D")


class EchoQAFormatError(ValueError):
    """The question file does not follow the MIMIC-EchoQA release format."""


@dataclass
class EchoQAItem:
    """One question. ``answer_key`` is the gold label: an option letter, or "Yes"/"No"."""

    qid: str
    study: str
    videos: list[str]
    question: str
    options: dict[str, str]
    answer: str
    answer_key: str
    structure: str
    view: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def yes_no(self) -> bool:
        return not self.options


_STUDY_RE = re.compile(r"(?:^|/)s(\d+)(?:/|$)")


def _study_from(rec: Mapping[str, Any], videos: list[str]) -> str:
    for k in ("study_id", "study"):
        if rec.get(k) not in (None, ""):
            return str(rec[k])
    for v in videos:
        m = _STUDY_RE.search(v.replace("\\", "/"))
        if m:
            return m.group(1)
    return ""


def _item(rec: Any, i: int, where: str) -> EchoQAItem:
    if not isinstance(rec, dict):
        raise EchoQAFormatError(f"{where}: record #{i} is not a JSON object")
    for k in ("question", "answer"):
        if not isinstance(rec.get(k), str) or not rec[k].strip():
            raise EchoQAFormatError(f"{where}: record #{i} has no {k!r} text")
    videos = rec.get("videos", rec.get("video", []))
    videos = [videos] if isinstance(videos, str) else list(videos or [])
    options = {o: str(rec.get(f"option_{o}") or "").strip() for o in OPTIONS}
    options = {o: t for o, t in options.items() if t}
    answer = rec["answer"].strip()
    if options:
        key = str(rec.get("correct_option") or "").strip().upper()
        if key not in options:
            # Fall back to the option whose text is the answer.
            match = [o for o, t in options.items() if t.lower() == answer.lower()]
            if len(match) != 1:
                raise EchoQAFormatError(
                    f"{where}: record #{i} has correct_option {rec.get('correct_option')!r} "
                    f"that is not one of its options {sorted(options)}")
            key = match[0]
    else:
        if answer.lower() not in ("yes", "no"):
            raise EchoQAFormatError(f"{where}: record #{i} has no options and answer "
                                    f"{answer!r} is not Yes/No")
        key = answer.capitalize()
    qid = str(rec.get("messages_id", rec.get("id", i)))
    known = {"messages_id", "id", "videos", "video", "question", "answer", "correct_option",
             "structure", "view", "study_id", "study", *(f"option_{o}" for o in OPTIONS)}
    return EchoQAItem(qid=qid, study=_study_from(rec, videos), videos=videos,
                      question=rec["question"].strip(), options=options, answer=answer,
                      answer_key=key, structure=str(rec.get("structure") or "unspecified"),
                      view=str(rec.get("view") or ""),
                      extra={k: v for k, v in rec.items() if k not in known})


def load_echoqa(path: str | Path) -> list[EchoQAItem]:
    """Read a MIMIC-EchoQA JSON list (or JSON Lines) file into :class:`EchoQAItem` s."""
    path = Path(path)
    if not path.is_file():
        raise EchoQAFormatError(f"no EchoQA file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        except json.JSONDecodeError as e:
            raise EchoQAFormatError(f"{path} is neither a JSON list nor JSON Lines: {e}") from e
    if isinstance(data, dict):
        data = data.get("data", data.get("questions"))
    if not isinstance(data, list):
        raise EchoQAFormatError(f"{path}: expected a list of question records")
    items = [_item(r, i, str(path)) for i, r in enumerate(data)]
    seen: set[str] = set()
    for it in items:
        if it.qid in seen:
            raise EchoQAFormatError(f"{path}: duplicated question id {it.qid!r}")
        seen.add(it.qid)
    return items


def format_question(item: EchoQAItem) -> str:
    """The question as text for a language model, ending with the answer instruction."""
    if item.yes_no:
        return f"Question: {item.question}\nAnswer Yes or No."
    opts = "\n".join(f"{o}. {t}" for o, t in item.options.items())
    return f"Question: {item.question}\nOptions:\n{opts}\nAnswer with the option letter."


_LETTER_RES = (
    re.compile(r"^\s*\(?([A-D])\)?(?:[.:)\s]|$)"),
    re.compile(r"\b(?i:answer|option)\s*(?i:is|:)?\s*\(?([A-D])\)?(?![A-Za-z])"),
)


def parse_choice(text: str, item: EchoQAItem) -> str | None:
    """Map a model's answer text to ``A``-``D`` (or ``Yes``/``No``); None if unreadable.

    >>> it = EchoQAItem("1", "9", [], "Q?", {"A": "mild", "B": "severe"}, "severe", "B", "MV", "")
    >>> parse_choice("B. severe", it), parse_choice("The answer is (A)", it)
    ('B', 'A')
    >>> parse_choice("severe", it), parse_choice("no idea", it) is None
    ('B', True)
    """
    t = text.strip()
    if item.yes_no:
        m = re.match(r"^\W*(yes|no)\b", t, re.I)
        return m.group(1).capitalize() if m else None
    for rx in _LETTER_RES:
        m = rx.search(t)
        if m and m.group(1).upper() in item.options:
            return m.group(1).upper()
    low = t.lower().rstrip(".")
    hits = [o for o, txt in item.options.items() if low.startswith(txt.lower())]
    return hits[0] if len(hits) == 1 else None


def score_echoqa(items: Sequence[EchoQAItem], predictions: Mapping[str, str]) -> dict[str, Any]:
    """Accuracy and balanced accuracy overall and per structure group.

    Args:
        items: the questions (from :func:`load_echoqa`).
        predictions: ``{qid: model answer text}``; a missing or unreadable answer is wrong.

    Returns ``{"n", "answered", "unparsed", "accuracy", "balanced_accuracy",
    "macro_balanced_accuracy_over_structures", "per_structure": {structure: {"n", "accuracy",
    "balanced_accuracy"}}}``. Balanced accuracy is scikit-learn's (mean recall over the gold
    answer classes present in the group); an unreadable answer is its own wrong class.
    """
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    if not items:
        raise ValueError("no EchoQA questions to score")
    gold, pred, groups = [], [], []
    unparsed = 0
    for it in items:
        raw = predictions.get(it.qid)
        choice = parse_choice(raw, it) if raw is not None else None
        if choice is None:
            unparsed += 1
        gold.append(it.answer_key)
        pred.append(choice or "<none>")
        groups.append(it.structure)

    def block(idx: list[int]) -> dict[str, Any]:
        g = [gold[i] for i in idx]
        p = [pred[i] for i in idx]
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
            bacc = float(balanced_accuracy_score(g, p))
        return {"n": len(idx), "accuracy": float(np.mean([a == b for a, b in zip(g, p, strict=True)])),
                "balanced_accuracy": bacc}

    per = {s: block([i for i, g in enumerate(groups) if g == s]) for s in sorted(set(groups))}
    out = {"n": len(items), "answered": sum(it.qid in predictions for it in items),
           "unparsed": unparsed, **block(list(range(len(items))))}
    out["macro_balanced_accuracy_over_structures"] = float(
        np.mean([v["balanced_accuracy"] for v in per.values()]))
    out["per_structure"] = per
    return out
