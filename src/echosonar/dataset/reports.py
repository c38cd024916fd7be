"""Report targets for a user's studies: their own report text in sections, else one from labels.

EchoSonar-R writes a report with every ``taxonomy.REPORT_SECTIONS`` section, and the strict
parser refuses an empty one, so a user's report is cut into those sections:

1. text under a header (``Left ventricle:``, ``LV:``, ``Mitral valve:`` ... — the section titles
   or keys, case-insensitive, at the start of a line or sentence) goes to that section;
2. text outside any header is split into sentences, and each sentence goes to the section of
   the finding it names (``echosonar.phrases.FINDING_PHRASES``), else to the conclusion;
3. a section still empty is written from the labels (:func:`report_from_labels`), and counted.

A report as a JSON object ``{section key or title: text}`` skips 1-2.

:func:`report_from_labels` writes every section from the labels alone (measurements when the
labels file has them). Its sentences follow the rules the rule-based GREEN judge reads
(``echosonar.phrases``): a positive sentence names the finding with one severity word (the
taxonomy grade when the measurements allow it, else ``present``), a negative one carries a
negation cue.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from echosonar.dataset.labels import find_id_column, norm, read_table, table_rows
from echosonar.dataset.problems import Problems
from echosonar.phrases import FINDING_PHRASES, split_sentences
from echosonar.taxonomy import FINDINGS, REPORT_SECTION_TITLES, REPORT_SECTIONS

#: normalised header text -> section key (titles and keys, e.g. "left_ventricle", "lv")
SECTION_NAMES: dict[str, str] = {**{norm(t): s for s, t in REPORT_SECTION_TITLES.items()},
                                 **{norm(s): s for s in REPORT_SECTIONS},
                                 "impression": "conclusion", "summary": "conclusion",
                                 "aortic_valve": "aortic", "mitral_valve": "mitral",
                                 "tricuspid_valve": "tricuspid", "pericardial": "pericardium"}
_HEADER = re.compile(
    r"(?:^|(?<=[\n.;]))\s*(" + "|".join(sorted(
        (re.escape(h.replace("_", " ")) for h in SECTION_NAMES), key=len, reverse=True))
    + r")\s*:", re.IGNORECASE)


def _section_of_sentence(sentence: str) -> str:
    low = sentence.lower()
    for f in FINDINGS:
        if any(p in low for p in FINDING_PHRASES[f.key]):
            return f.section
    return "conclusion"


def split_report(report: str | Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """``({section: text}, unknown keys)`` of a user's report (text or JSON object); sections
    that the report does not fill are absent.

    >>> split_report("Left ventricle: Normal size. Conclusion: Normal study.")[0]
    {'LV': 'Normal size', 'conclusion': 'Normal study'}
    >>> split_report("Moderate mitral regurgitation. Otherwise normal.")[0]
    {'mitral': 'Moderate mitral regurgitation', 'conclusion': 'Otherwise normal'}
    """
    out: dict[str, list[str]] = {}
    unknown: list[str] = []
    if isinstance(report, Mapping):
        for k, v in report.items():
            sec = SECTION_NAMES.get(norm(str(k)))
            if sec is None:
                unknown.append(str(k))
            elif str(v or "").strip():
                out.setdefault(sec, []).append(str(v).strip())
        return _joined(out), unknown
    text = str(report)
    marks = [(m.start(1), m.end(0), SECTION_NAMES[norm(m.group(1))])
             for m in _HEADER.finditer(text)]
    free = [text[:marks[0][0]] if marks else text]
    for j, (_, end, sec) in enumerate(marks):
        body = text[end:marks[j + 1][0] if j + 1 < len(marks) else len(text)]
        out.setdefault(sec, []).extend(split_sentences(body))
    for chunk in free:
        for sent in split_sentences(chunk):
            out.setdefault(_section_of_sentence(sent), []).append(sent)
    return _joined(out), unknown


def _joined(parts: dict[str, list[str]]) -> dict[str, str]:
    joined = {s: ". ".join(p.strip().rstrip(".") for p in parts[s] if p.strip())
              for s in REPORT_SECTIONS if s in parts}
    return {s: t for s, t in joined.items() if t}


def _severity(key: str, measurements: Mapping[str, Any]) -> str:
    """The taxonomy grade when the measurements it reads are given, else ``present``."""
    from echosonar.taxonomy import FINDING_BY_KEY

    try:
        return FINDING_BY_KEY[key].severity(measurements) or "present"
    except (KeyError, TypeError, ValueError):
        return "present"


def _name(key: str) -> str:
    from echosonar.taxonomy import FINDING_BY_KEY

    return FINDING_BY_KEY[key].name


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def report_from_labels(labels: Mapping[str, int],
                       measurements: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every report section from the labels (severity words from measurements when given).

    >>> r = report_from_labels({f.key: int(f.key == "mitral_regurgitation") for f in FINDINGS})
    >>> r["mitral"], r["conclusion"]
    ('No mitral valve calcification. Mitral regurgitation present', 'Mitral regurgitation present')
    """
    m = dict(measurements or {})
    out: dict[str, str] = {}
    for sec in REPORT_SECTIONS[:-1]:
        sents = []
        for f in FINDINGS:
            if f.section != sec:
                continue
            if labels.get(f.key):
                sev = _severity(f.key, m)
                sents.append(f"{_cap(f.name)} present" if sev == "present"
                             else f"{_cap(sev)} {f.name}")
            else:
                sents.append(f"No {f.name}")
        out[sec] = ". ".join(sents)
    pos = [f for f in FINDINGS if labels.get(f.key)]
    out["conclusion"] = ". ".join(
        f"{_cap(f.name)} present" if _severity(f.key, m) == "present"
        else f"{_cap(_severity(f.key, m))} {f.name}" for f in pos) or "No significant abnormality"
    return out


def report_target(user: str | Mapping[str, Any] | None, labels: Mapping[str, int],
                  measurements: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, str], list[str], list[str]]:
    """The study's report target: ``(sections, sections written from labels, unknown keys)``.
    Without a user report every section is written from the labels."""
    fallback = report_from_labels(labels, measurements)
    if user is None:
        return fallback, list(REPORT_SECTIONS), []
    got, unknown = split_report(user)
    filled = [s for s in REPORT_SECTIONS if s not in got]
    return {s: got.get(s) or fallback[s] for s in REPORT_SECTIONS}, filled, unknown


def read_reports(path: Path | None, id_column: str, problems: Problems) -> dict[str, Any]:
    """``{study_id: (where, report text or {section: text})}`` from a CSV/JSONL reports file."""
    if path is None:
        return {}
    table = read_table(path, "reports", problems)
    if table is None:
        return {}
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    idc = find_id_column(table, id_column, "reports", problems)
    if idc is None:
        return {}
    sec_cols = [h for h in table.headers if h in SECTION_NAMES]
    if "report" not in table.headers and not sec_cols:
        problems.error("reports", "no 'report' column and no section columns (LV, mitral, "
                       "conclusion, ... or their titles)")
        return {}
    out: dict[str, Any] = {}
    first: dict[str, str] = {}
    for _i, where, sid, cells in table_rows(table.rows, "reports", jsonl, idc, problems):
        rep = cells.get("report")
        if rep is None or rep == "":
            rep = {h: cells[h] for h in sec_cols if str(cells.get(h) or "").strip()} or None
        if not sid or rep is None or (isinstance(rep, str) and not rep.strip()):
            problems.error(where, "empty identifier or report")
        elif sid in first:
            problems.error(where, f"a second report for the study of {first[sid]}; both are "
                           "left out (the report is written from the labels)")
            out[sid] = None
        elif not isinstance(rep, (str, dict)):
            problems.error(where, "report must be text or an object of sections")
        else:
            first[sid], out[sid] = where, (where, rep)
    return {k: v for k, v in out.items() if v is not None}
