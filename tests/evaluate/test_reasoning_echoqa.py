"""Reasoning checks on crafted generations; the MIMIC-EchoQA loader and scorer."""

import json

import pytest

from echosonar.evaluate.echoqa import (
    EchoQAFormatError,
    format_question,
    load_echoqa,
    parse_choice,
    score_echoqa,
)
from echosonar.evaluate.reasoning_checks import check_reasoning, reasoning_check_rates
from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
from echosonar.textformat import parse_generation, render_generation, render_view_line

REPORT = {s: "Text." for s in REPORT_SECTIONS}
A4C_RV = render_view_line("A4C", {"RV": [.1, .1, .4, .5], "LV": [.5, .1, .9, .6]},
                          "RV wide", ["RV enlargement"], "pressure load")
A4C_NONE = render_view_line("A4C", {"LV": [.5, .1, .9, .6]}, "ok", [], "normal")
PLAX = render_view_line("PLAX", {"LV": [.2, .2, .6, .6]}, "ok", [], "normal")


def _generation(lines, findings):
    """A generation whose reasoning has ``lines`` (acquired views) and every other view of
    ``taxonomy.VIEWS`` as not acquired, in order (the strict parser wants all six)."""
    by_view = {ln.split(":")[0].removeprefix("view "): ln for ln in lines}
    return render_generation([by_view.get(v) or render_view_line(v, None) for v in VIEWS],
                             findings, REPORT)


def _check(lines, findings):
    return check_reasoning(parse_generation(_generation(lines, findings)))


def test_consistent_generation_passes_all():
    r = _check([A4C_RV, PLAX], ["RV enlargement"])
    assert r.well_formed and r.all_pass and not r.problems


def test_answer_not_concluded_in_reasoning():
    r = _check([A4C_NONE, PLAX], ["RV enlargement"])
    assert not r.agreement and not r.grounded and r.no_unassessable_claims
    assert "answered but not concluded" in r.problems[0]


def test_reasoning_finding_missing_from_answer():
    r = _check([A4C_RV, PLAX], [])  # answer says healthy
    assert not r.agreement and r.grounded  # nothing positive to ground


def test_finding_without_its_structure_is_not_grounded():
    line = render_view_line("A4C", {"LV": [.5, .1, .9, .6]}, "RV wide", ["RV enlargement"], "x")
    r = _check([line], ["RV enlargement"])
    assert r.agreement and not r.grounded and r.no_unassessable_claims


def test_finding_claimed_from_a_view_that_cannot_show_it():
    # Bicuspid valve is only assessable in PSAX_AV; PLAX cannot show it.
    plax = render_view_line("PLAX", {"AV": [.4, .4, .6, .6]}, "two cusps",
                            ["bicuspid aortic valve"], "congenital")
    r = _check([plax], ["bicuspid aortic valve"])
    assert r.agreement and not r.grounded and not r.no_unassessable_claims
    assert any("claimed from PLAX" in p for p in r.problems)


def test_rates_count_malformed_as_failures():
    good = parse_generation(_generation([A4C_RV], ["RV enlargement"]))
    bad = parse_generation("<think>oops</think>")
    out = reasoning_check_rates([good, bad], ["s1", "s2"])
    assert out["well_formed_rate"] == 0.5 and out["agreement_rate"] == 0.5
    assert out["agreement_rate_well_formed"] == 1.0
    assert out["per_study"]["s2"]["problems"] == ["malformed generation"]


# ---------------------------------------------------------------------------------------------
# MIMIC-EchoQA
# ---------------------------------------------------------------------------------------------

def _records():
    base = "mimic-iv-echo/0.1/files/p10/p10000001/s90000001/90000001_00{:02d}.mp4"
    return [
        {"messages_id": "q1", "videos": [base.format(1)], "question": "MR severity?",
         "option_A": "None", "option_B": "Mild", "option_C": "Moderate", "option_D": "Severe",
         "answer": "Moderate", "correct_option": "C", "structure": "Mitral Valve",
         "view": "A4C"},
        {"messages_id": "q2", "videos": [base.format(2)], "question": "MR present?",
         "option_A": "", "option_B": "", "option_C": "", "option_D": "", "answer": "Yes",
         "correct_option": "", "structure": "Mitral Valve", "view": "A4C"},
        {"messages_id": "q3", "video": base.format(3), "question": "LV size?",
         "option_A": "Normal", "option_B": "Dilated", "option_C": "Small", "option_D": "",
         "answer": "Normal", "correct_option": "A", "structure": "Left Ventricle",
         "view": "PLAX"},
        {"messages_id": "q4", "videos": [base.format(4)], "question": "LV size?",
         "option_A": "Normal", "option_B": "Dilated", "option_C": "Small", "option_D": "",
         "answer": "Dilated", "correct_option": "B", "structure": "Left Ventricle",
         "view": "PLAX"},
    ]


def test_echoqa_loader_json_and_jsonl(tmp_path):
    p = tmp_path / "MIMICEchoQA.json"
    p.write_text(json.dumps(_records()))
    items = load_echoqa(p)
    assert [i.qid for i in items] == ["q1", "q2", "q3", "q4"]
    assert items[0].study == "90000001" and items[0].answer_key == "C"
    assert items[1].yes_no and items[1].answer_key == "Yes"
    assert items[2].videos == [_records()[2]["video"]] and set(items[2].options) == {"A", "B", "C"}
    assert "C. Moderate" in format_question(items[0])
    jl = tmp_path / "qa.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in _records()))
    assert [i.answer_key for i in load_echoqa(jl)] == ["C", "Yes", "A", "B"]


def test_echoqa_loader_errors(tmp_path):
    bad = _records()
    bad[0]["correct_option"] = "D"
    bad[0]["option_D"] = ""
    bad[0]["answer"] = "Unknown"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(EchoQAFormatError, match="record #0"):
        load_echoqa(p)
    with pytest.raises(EchoQAFormatError, match="no EchoQA file"):
        load_echoqa(tmp_path / "missing.json")


def test_echoqa_scoring_per_structure(tmp_path):
    p = tmp_path / "qa.json"
    p.write_text(json.dumps(_records()))
    items = load_echoqa(p)
    assert parse_choice("(C) Moderate", items[0]) == "C"
    assert parse_choice("Moderate.", items[0]) == "C"
    assert parse_choice("yes, there is MR", items[1]) == "Yes"
    preds = {"q1": "C", "q2": "No", "q3": "A. Normal", "q4": "Normal"}  # q4 wrong
    out = score_echoqa(items, preds)
    assert out["accuracy"] == pytest.approx(2 / 4)
    lv, mv = out["per_structure"]["Left Ventricle"], out["per_structure"]["Mitral Valve"]
    assert lv["accuracy"] == 0.5 and lv["balanced_accuracy"] == 0.5  # recall A=1, B=0
    assert mv["accuracy"] == 0.5 and mv["balanced_accuracy"] == 0.5  # recall C=1, Yes=0
    assert out["macro_balanced_accuracy_over_structures"] == 0.5
    # Missing and unreadable answers are wrong, not skipped.
    out2 = score_echoqa(items, {"q1": "I am not sure"})
    assert out2["accuracy"] == 0 and out2["unparsed"] == 4 and out2["answered"] == 1
