"""Reading a user's labels file: one row per study, its findings, measurements and split.

Accepted layout (CSV, or TSV when the name ends in ``.tsv``; UTF-8, an Excel BOM is fine)::

    study,lv_systolic_dysfunction,lv_enlargement,...,pericardial_effusion[,healthy][,split][,ef_pct,...]
    study,findings[,split][,report][,lvedd_cm,...]            # or a findings *list* per row

* the identifier column: ``dataset.id_column``, else the first of ``study``, ``study_id``,
  ``id``, ``StudyInstanceUID``, ``accession`` (header names are matched case-insensitively,
  spaces and hyphens count as underscores, so ``LV systolic dysfunction`` is the key too);
* **wide**: one column per finding of ``taxonomy.FINDINGS`` (every one of them), values 0 or 1;
  ``healthy`` optional (checked: 1 exactly when no finding is 1);
* **list**: a ``findings`` column, names or keys separated by ``dataset.list_separator``
  (``healthy``, ``none``, ``normal`` or an empty cell = no finding);
* optional ``split`` (train/val/test), ``report`` (free text) and measurement columns named as in
  ``taxonomy.MEASUREMENTS`` (numbers; ``sex`` M/F).

Each bad row is left out with a specific problem (``labels row 7: ...``; rows are numbered as a
spreadsheet numbers them, header = row 1); problems that make the whole file unusable (no
identifier column, neither layout, a missing finding column) leave no rows.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echosonar.dataset.problems import Problems, quoted
from echosonar.taxonomy import FINDINGS, HEALTHY, MEASUREMENTS

ID_CANDIDATES = ("study", "study_id", "id", "studyinstanceuid", "accession", "accession_number")
SPLITS = ("train", "val", "test")
NO_FINDING = ("", "healthy", "none", "normal")


def norm(name: str) -> str:
    """How headers and finding names are compared: lower case, spaces/hyphens -> underscores.

    >>> norm(" LV systolic-dysfunction "), norm("StudyInstanceUID")
    ('lv_systolic_dysfunction', 'studyinstanceuid')
    """
    return "_".join(name.strip().lower().replace("-", " ").split())


#: finding names and keys, normalised, -> key
_FINDING_NAMES = {**{norm(f.name): f.key for f in FINDINGS}, **{f.key: f.key for f in FINDINGS}}


@dataclass
class LabelRow:
    """One usable labels row: ``labels`` has every ``taxonomy.LABEL_KEYS`` key (healthy derived)."""

    row: int
    study_id: str
    labels: dict[str, int]
    measurements: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    report: str | None = None


@dataclass
class Table:
    """A CSV/TSV/JSONL file as normalised headers + rows (``rows[i]`` is spreadsheet row i + 2)."""

    path: Path
    headers: list[str]
    raw_headers: list[str]
    rows: list[dict[str, Any]]


def read_table(path: str | Path, what: str, problems: Problems) -> Table | None:
    """Read a CSV (``.csv``/``.txt``), TSV (``.tsv``) or JSON Lines (``.jsonl``) file; None (with
    a problem) when it cannot be read at all."""
    path = Path(path)
    if not path.is_file():
        problems.error(what, "file not found")
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        problems.error(what, "not UTF-8 text (save the spreadsheet as CSV UTF-8)")
        return None
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return _read_jsonl(path, text, what, problems)
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(text.splitlines(), delimiter=delim)
    try:
        lines = list(reader)
    except csv.Error as e:
        problems.error(what, f"not a readable CSV file ({e})")
        return None
    if not lines or not any(c.strip() for c in lines[0]):
        problems.error(what, "empty file (no header row)")
        return None
    raw = [h.strip() for h in lines[0]]
    heads = [norm(h) for h in raw]
    dup = sorted({h for h in heads if h and heads.count(h) > 1})
    if dup:
        problems.error(what, f"column(s) {', '.join(dup)} appear more than once")
        return None
    rows = []
    for cells in lines[1:]:
        if not any(c.strip() for c in cells):
            rows.append({})  # a blank line keeps its row number but holds nothing
            continue
        if len(cells) != len(heads):
            rows.append({"__bad__": f"has {len(cells)} cells, the header has {len(heads)}"})
            continue
        rows.append({h: c.strip() for h, c in zip(heads, cells, strict=True) if h})
    return Table(path, heads, raw, rows)


def _read_jsonl(path: Path, text: str, what: str, problems: Problems) -> Table | None:
    rows: list[dict[str, Any]] = []
    heads: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            rows.append({})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            rows.append({"__bad__": "is not valid JSON"})
            continue
        if not isinstance(obj, dict):
            rows.append({"__bad__": "is not a JSON object"})
            continue
        row = {norm(str(k)): v for k, v in obj.items()}
        heads += [h for h in row if h not in heads]
        rows.append(row)
    if not any(rows):
        problems.error(what, "empty file (no JSON object)")
        return None
    return Table(path, heads, heads, rows)


def find_id_column(table: Table, wanted: str, what: str, problems: Problems) -> str | None:
    """The identifier column (``wanted`` if set), or None with a problem naming the choices."""
    if wanted:
        if norm(wanted) in table.headers:
            return norm(wanted)
        problems.error(what, f"no identifier column {wanted!r} (dataset.id_column)")
        return None
    for c in ID_CANDIDATES:
        if c in table.headers:
            return c
    problems.error(what, "no study identifier column: name one of "
                   f"{', '.join(ID_CANDIDATES)}, or set dataset.id_column")
    return None


def row_where(what: str, i: int, jsonl: bool) -> str:
    """``labels row 7`` (spreadsheet numbering, header = 1) or ``reports line 3`` (JSONL)."""
    return f"{what} line {i + 1}" if jsonl else f"{what} row {i + 2}"


def table_rows(rows: list[dict[str, Any]], what: str, jsonl: bool, idc: str,
               problems: Problems):
    """``(index, where, study id, cells)`` for every usable row of a labels/views/reports
    table: empty rows are skipped, unreadable ones (``__bad__``) reported, and the study id
    (column ``idc``) stripped -- the one row loop the three readers share."""
    for i, cells in enumerate(rows):
        where = row_where(what, i, jsonl)
        if not cells:
            continue
        if "__bad__" in cells:
            problems.error(where, str(cells["__bad__"]))
            continue
        yield i, where, str(cells.get(idc, "") or "").strip(), cells


def _binary(value: str) -> int | None:
    v = value.strip()
    return {"0": 0, "1": 1, "0.0": 0, "1.0": 1}.get(v)


def _measurement(key: str, value: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``; an empty cell is ``(None, None)`` (unknown)."""
    v = value.strip()
    if not v:
        return None, None
    if key == "sex":
        s = v.upper()[:1]
        return (s, None) if s in ("M", "F") else (None, f"sex must be M or F, got {quoted(v)}")
    try:
        x = float(v)
    except ValueError:
        return None, f"{key} must be a number, got {quoted(v)}"
    if not math.isfinite(x):
        return None, f"{key} must be a finite number, got {quoted(v)}"
    return x, None


def parse_findings_list(cell: str, sep: str) -> tuple[list[str], list[str]]:
    """``(finding keys, unknown names)`` of one ``findings`` cell.

    >>> parse_findings_list("LV enlargement; mitral_regurgitation", ";")
    (['lv_enlargement', 'mitral_regurgitation'], [])
    >>> parse_findings_list("healthy", ";"), parse_findings_list("LV big", ";")
    (([], []), ([], ['LV big']))
    """
    keys, unknown = [], []
    for item in (x.strip() for x in str(cell).split(sep)):
        if norm(item) in NO_FINDING:
            continue
        key = _FINDING_NAMES.get(norm(item))
        if key is None:
            unknown.append(item)
        elif key not in keys:
            keys.append(key)
    return keys, unknown


def read_labels(path: str | Path, id_column: str = "", sep: str = ";",
                problems: Problems | None = None) -> tuple[dict[str, LabelRow], Problems]:
    """Parse the labels file. Returns ``({study_id: LabelRow}, problems)``; every row that is
    left out has an ``error`` problem, ignored columns a ``warning``."""
    problems = problems if problems is not None else Problems()
    what = "labels"
    table = read_table(path, what, problems)
    if table is None:
        return {}, problems
    jsonl = Path(path).suffix.lower() in (".jsonl", ".ndjson")
    idc = find_id_column(table, id_column, what, problems)
    if idc is None:
        return {}, problems
    finding_cols = [f.key for f in FINDINGS if f.key in table.headers or norm(f.name) in
                    table.headers]
    wide = bool(finding_cols)
    if wide and "findings" in table.headers:
        problems.error(what, "has both a 'findings' list column and per-finding columns; use "
                       "one layout")
        return {}, problems
    if not wide and "findings" not in table.headers:
        problems.error(what, "no label columns: give one 0/1 column per finding "
                       f"({', '.join(f.key for f in FINDINGS)}) or a 'findings' list column")
        return {}, problems
    if wide:
        missing = [f.key for f in FINDINGS if f.key not in finding_cols]
        if missing:
            problems.error(what, f"finding column(s) missing: {', '.join(missing)} (every "
                           "finding needs a 0/1 column; a study without it is 0)")
            return {}, problems
    col_of = {f.key: (f.key if f.key in table.headers else norm(f.name)) for f in FINDINGS}
    known = {idc, "findings", "split", "report", HEALTHY.key, *MEASUREMENTS,
             *(col_of.values() if wide else ())}
    for raw, h in zip(table.raw_headers, table.headers, strict=True):
        if h and h not in known:
            problems.warning(what, f"column {quoted(raw)} ignored (not an identifier, finding, "
                             "healthy, split, report or taxonomy.MEASUREMENTS column)")
    rows: dict[str, LabelRow] = {}
    first_row: dict[str, int] = {}
    dups: set[str] = set()
    for i, where, sid, cells in table_rows(table.rows, what, jsonl, idc, problems):
        if not sid:
            problems.error(where, f"empty identifier ({idc})")
            continue
        if sid in first_row:
            problems.error(where, f"duplicate identifier: the same study as "
                           f"{row_where(what, first_row[sid], jsonl)}; both rows are left out")
            dups.add(sid)
            continue
        first_row[sid] = i
        row = _parse_row(cells, wide, col_of, sep, where, problems)
        if row is not None:
            row.row, row.study_id = i + 2, sid
            rows[sid] = row
    for sid in dups:
        rows.pop(sid, None)
    return rows, problems


def _parse_row(cells: dict[str, Any], wide: bool, col_of: dict[str, str], sep: str, where: str,
               problems: Problems) -> LabelRow | None:
    labels: dict[str, int] = {}
    bad = []
    if wide:
        for key, col in col_of.items():
            v = str(cells.get(col, "") if cells.get(col) is not None else "")
            b = _binary(v)
            if b is None:
                bad.append(f"{key} is {'empty' if not v.strip() else quoted(v)}, not 0 or 1")
            else:
                labels[key] = b
    else:
        cell = cells.get("findings")
        items = cell if isinstance(cell, list) else str(cell or "").split(sep)
        keys, unknown = parse_findings_list(sep.join(str(x) for x in items), sep)
        if unknown:
            bad.append("unknown finding name(s) " + ", ".join(quoted(u) for u in unknown)
                       + " (known: taxonomy finding names or keys, or 'healthy')")
        labels = {f.key: int(f.key in keys) for f in FINDINGS}
    if bad:
        problems.error(where, "; ".join(bad))
        return None
    healthy = int(not any(labels.values()))
    if HEALTHY.key in cells and str(cells[HEALTHY.key]).strip() != "":
        h = _binary(str(cells[HEALTHY.key]))
        if h is None:
            problems.error(where, f"healthy is {quoted(str(cells[HEALTHY.key]))}, not 0 or 1")
            return None
        if h != healthy:
            problems.error(where, f"healthy is {h} but {'no' if healthy else 'a'} finding is 1")
            return None
    labels[HEALTHY.key] = healthy
    split = None
    raw_split = str(cells.get("split", "") or "").strip().lower()
    if raw_split:
        if raw_split not in SPLITS:
            problems.error(where, f"split {quoted(raw_split)} is not one of {', '.join(SPLITS)}")
            return None
        split = raw_split
    meas: dict[str, Any] = {}
    for key in MEASUREMENTS:
        if key in cells and cells[key] is not None:
            val, why = _measurement(key, str(cells[key]))
            if why:
                problems.warning(where, why + "; measurement left out")
            elif val is not None:
                meas[key] = val
    report = cells.get("report")
    report = report if isinstance(report, (str, dict)) and report else None
    return LabelRow(0, "", labels, meas, split, report)
