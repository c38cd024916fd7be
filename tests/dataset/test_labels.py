"""Labels, reports and views files: every kind of bad input gives a specific, positioned problem."""

from __future__ import annotations

import pytest

from echosonar.dataset.labels import read_labels
from echosonar.dataset.problems import Problems
from echosonar.dataset.views import read_views_file
from echosonar.taxonomy import FINDINGS, LABEL_KEYS

KEYS = [f.key for f in FINDINGS]
HEAD = "study," + ",".join(KEYS)


def _row(sid: str, positives: tuple[str, ...] = (), **extra: str) -> str:
    return sid + "," + ",".join("1" if k in positives else "0" for k in KEYS)


def _read(tmp_path, text: str, name: str = "labels.csv", **kw):
    p = tmp_path / name
    p.write_text(text)
    return read_labels(p, **kw)


def test_wide_layout_reads_every_label_and_derives_healthy(tmp_path):
    rows, probs = _read(tmp_path, "\n".join([HEAD, _row("A", ("lv_enlargement",)), _row("B")]))
    assert not probs.items
    assert set(rows) == {"A", "B"}
    assert set(rows["A"].labels) == set(LABEL_KEYS)
    assert rows["A"].labels["lv_enlargement"] == 1 and rows["A"].labels["healthy"] == 0
    assert rows["B"].labels["healthy"] == 1 and rows["A"].row == 2 and rows["B"].row == 3


def test_list_layout_names_keys_case_and_excel_bom(tmp_path):
    text = ("\ufeffStudy ID,Findings,Split,EF_pct,sex\n"
            "A,LV systolic dysfunction; mitral_regurgitation,TEST,35,f\n"
            "B,healthy,,62,M\nC,,train,,\n")
    rows, probs = _read(tmp_path, text, id_column="study id")
    assert not probs.errors, probs.to_list()
    assert rows["A"].labels["lv_systolic_dysfunction"] == rows["A"].labels[
        "mitral_regurgitation"] == 1
    assert rows["A"].split == "test" and rows["B"].split is None
    assert rows["A"].measurements == {"ef_pct": 35.0, "sex": "F"}
    assert rows["B"].labels["healthy"] == rows["C"].labels["healthy"] == 1


def test_tsv_is_read_by_extension(tmp_path):
    text = HEAD.replace(",", "\t") + "\n" + _row("A", ("pericardial_effusion",)).replace(",", "\t")
    rows, probs = _read(tmp_path, text, name="labels.tsv")
    assert not probs.items and rows["A"].labels["pericardial_effusion"] == 1


BAD_ROWS = [
    # (rows after the header, expected where, expected words in the reason)
    ([_row("A").replace(",0", ",2", 1)], "labels row 2", ["lv_systolic_dysfunction", "'2'",
                                                          "not 0 or 1"]),
    ([_row("A").replace(",0", ",yes", 1)], "labels row 2", ["'yes'", "not 0 or 1"]),
    ([_row("A").replace(",0", ",", 1)], "labels row 2", ["is empty", "not 0 or 1"]),
    ([_row("A") + ",extra"], "labels row 2", ["15 cells", "14"]),
    ([_row(""), _row("B")], "labels row 2", ["empty identifier"]),
    ([_row("A"), _row("B"), _row("A")], "labels row 4", ["duplicate identifier", "row 2"]),
]


@pytest.mark.parametrize("rows,where,words", BAD_ROWS)
def test_bad_wide_rows_are_left_out_with_a_specific_problem(tmp_path, rows, where, words):
    got, probs = _read(tmp_path, "\n".join([HEAD, *rows, _row("OK")]))
    hits = [p for p in probs.errors if p.where == where]
    assert hits, probs.to_list()
    assert all(w in hits[0].reason for w in words), hits[0].reason
    assert "OK" in got  # the good row survives
    if "duplicate" in words[0]:
        assert "A" not in got  # ambiguous: both rows are left out


@pytest.mark.parametrize("cell,words", [
    ("LV enormous", ["unknown finding name", "'LV enormous'"]),
    ("mitral regurgitation; aortic leak", ["'aortic leak'"]),
])
def test_unknown_finding_names(tmp_path, cell, words):
    got, probs = _read(tmp_path, f"study,findings\nA,{cell}\nB,healthy\n")
    assert "A" not in got and "B" in got
    assert probs.errors[0].where == "labels row 2"
    assert all(w in probs.errors[0].reason for w in words)


@pytest.mark.parametrize("text,words", [
    ("study,findings,split\nA,healthy,training\n", ["split 'training'", "train, val, test"]),
    (HEAD + ",healthy\n" + _row("A", ("lv_hypertrophy",)) + ",1\n", ["healthy is 1", "a finding"]),
    (HEAD + ",healthy\n" + _row("A") + ",0\n", ["healthy is 0", "no finding"]),
])
def test_bad_split_and_inconsistent_healthy(tmp_path, text, words):
    got, probs = _read(tmp_path, text)
    assert not got and probs.errors[0].where == "labels row 2"
    assert all(w in probs.errors[0].reason for w in words), probs.errors[0].reason


@pytest.mark.parametrize("text,words", [
    ("patient,findings\nA,healthy\n", ["no study identifier column", "dataset.id_column"]),
    ("study,notes\nA,x\n", ["no label columns", "findings"]),
    (HEAD.replace(",pericardial_effusion", "") + "\nA" + ",0" * 12 + "\n",
     ["finding column(s) missing: pericardial_effusion"]),
    (HEAD + ",findings\n", ["both a 'findings' list column and per-finding columns"]),
    ("study,study\nA,B\n", ["appear more than once"]),
    ("", ["empty file"]),
])
def test_unusable_files_leave_no_rows(tmp_path, text, words):
    got, probs = _read(tmp_path, text)
    assert got == {}
    assert probs.errors and probs.errors[0].where == "labels"
    assert all(w in probs.errors[0].reason for w in words), probs.errors[0].reason


def test_not_utf8_and_missing_file(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_bytes(b"study,findings\n\xff\xfe,healthy\n")
    assert "not UTF-8" in read_labels(p)[1].errors[0].reason
    assert read_labels(tmp_path / "nope.csv")[1].errors[0].reason == "file not found"


def test_bad_measurement_is_a_warning_and_unknown_columns_are_named(tmp_path):
    rows, probs = _read(tmp_path, "study,findings,ef_pct,comment\nA,healthy,sixty,hello\n")
    assert "A" in rows and rows["A"].measurements == {}
    reasons = [p.reason for p in probs.warnings]
    assert any("ef_pct must be a number" in r for r in reasons)
    assert any("column 'comment' ignored" in r for r in reasons)


def test_views_file_problems(tmp_path):
    p = tmp_path / "views.csv"
    p.write_text("study,file,view\nA,clip1.dcm,a4c\nA,clip2.dcm,A5C\nA,clip1.dcm,PLAX\n,x,A4C\n")
    probs = Problems()
    got = read_views_file(p, "", probs)
    assert got == {"A": {"clip1.dcm": ("A4C", "views row 2")}}
    reasons = {e.where: e.reason for e in probs.errors}
    assert "unknown view 'A5C'" in reasons["views row 3"]
    assert "the same file as views row 2" in reasons["views row 4"]
    assert "empty identifier" in reasons["views row 5"]


@pytest.mark.parametrize("text,name,where,words", [
    ('{"study": "A", "report": "Normal."}\n{"study": "A", "report": "x"}\n', "r.jsonl",
     "reports line 2", ["a second report", "reports line 1"]),
    ("study,report\nA,\n", "r.csv", "reports row 2", ["empty identifier or report"]),
    ("study,text\nA,x\n", "r.csv", "reports", ["no 'report' column"]),
    ('{"study": "A"\n{"study": "B", "report": "x"}\n', "r.jsonl", "reports line 1",
     ["not valid JSON"]),
])
def test_reports_file_problems(tmp_path, text, name, where, words):
    from echosonar.dataset.reports import read_reports

    p = tmp_path / name
    p.write_text(text)
    probs = Problems()
    got = read_reports(p, "", probs)
    assert "A" not in got
    hit = [e for e in probs.errors if e.where == where]
    assert hit and all(w in hit[0].reason for w in words), probs.to_list()


def test_reports_by_section_columns(tmp_path):
    from echosonar.dataset.reports import read_reports

    p = tmp_path / "r.csv"
    p.write_text("study,Left ventricle,Conclusion\nA,Dilated,Abnormal study\n")
    probs = Problems()
    assert read_reports(p, "", probs) == {"A": ("reports row 2", {"left_ventricle": "Dilated",
                                                                    "conclusion":
                                                                    "Abnormal study"})}
