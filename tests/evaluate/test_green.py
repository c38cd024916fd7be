"""GREEN-rule judge: one crafted report pair per error category, the formula (only abnormal
findings match), reading simulator reports, the batch's precision/recall, and the LLM judge's
prompt and parser on canned responses. Discrimination on simulated sets and accuracy on held-out
wording: test_green_yardstick.py."""

import numpy as np
import pytest

from echosonar.evaluate.green import compare_reports, extract_findings, green_rule_batch
from echosonar.evaluate.green_llm import ERROR_CATEGORIES, build_prompt, parse_response

NORMAL = {
    "LV": "Normal LV cavity size, LVIDd 4.9 cm. Normal left ventricular systolic function, "
          "LVEF about 60%.",
    "RA": "Normal right atrial size.",
    "mitral": "No significant mitral regurgitation.",
    "pericardium": "No pericardial effusion.",
}
# Two abnormal findings (LV enlargement, mitral regurgitation), the rest normal.
SICK = {**NORMAL, "LV": "The left ventricle is moderately dilated (LVIDd 6.4 cm). Normal left "
                        "ventricular systolic function, LVEF about 60%.",
        "mitral": "Moderate mitral regurgitation, jet area about 30% of the left atrium."}


def _with(**sections):
    return {**SICK, **sections}


def test_identical_reports_score_one_and_only_abnormal_findings_match():
    r = compare_reports(SICK, SICK)
    assert r.significant == [0] * 6 and r.score == 1.0
    assert r.matched_findings == ["lv_enlargement", "mitral_regurgitation"]  # normal ones don't
    both = compare_reports(NORMAL, NORMAL)
    assert both.both_normal and both.matched == 0 and both.score == 1.0


def test_agreeing_normal_statements_earn_nothing_on_a_sick_study():
    # The healthy report agrees with SICK's three normal statements but misses both findings.
    r = compare_reports(SICK, NORMAL)
    assert r.matched == 0 and r.significant == [0, 2, 0, 0, 0, 0] and r.score == 0.0


def test_both_normal_needs_a_candidate_that_says_so():
    assert compare_reports(NORMAL, "Normal study.").score == 1.0
    assert compare_reports(NORMAL, {"LV": "Text."}).score == 0.0  # says nothing the judge reads
    assert compare_reports(NORMAL, None).score == 0.0


def test_a_false_report():
    r = compare_reports(SICK, _with(pericardium="Small pericardial effusion, depth 0.7 cm."))
    assert r.significant == [1, 0, 0, 0, 0, 0]
    assert r.score == pytest.approx(2 / 3)


def test_b_missing_finding():
    r = compare_reports(SICK, _with(mitral="No significant mitral regurgitation."))
    assert r.significant == [0, 1, 0, 0, 0, 0] and r.score == pytest.approx(1 / 2)
    assert "(b) mitral_regurgitation" in r.errors[0]


def test_c_wrong_location():
    ref = _with(RA="Normal right atrial size.", LA="Severe left atrial dilatation (5.4 cm).")
    cand = _with(RA="Severe right atrial enlargement, minor axis 5.6 cm.",
                 LA="Normal left atrial size.")
    r = compare_reports(ref, cand)
    # One (c) instead of an (a) plus a (b).
    assert r.significant == [0, 0, 1, 0, 0, 0] and r.score == pytest.approx(2 / 3)
    assert any("(c) enlargement reported at RA instead of LA" in e for e in r.errors)


def test_d_severity():
    cand = _with(mitral="There is severe mitral regurgitation with a jet filling 45% of the LA.")
    r = compare_reports(SICK, cand)
    assert r.significant == [0, 0, 0, 1, 0, 0] and r.score == pytest.approx(1 / 2)
    # Half a grade apart, or a grade on one side only: insignificant, still matched.
    near = compare_reports(SICK, _with(mitral="Moderate to severe mitral regurgitation."))
    bare = compare_reports(SICK, _with(mitral="There is mitral regurgitation."))
    assert near.score == bare.score == 1.0 and near.insignificant[3] == bare.insignificant[3] == 1
    # Graded below the finding's threshold (mild regurgitation) against an abnormal grade.
    under = compare_reports(SICK, _with(mitral="Mild mitral regurgitation."))
    assert under.significant == [0, 0, 0, 1, 0, 0]


def test_e_and_f_comparisons():
    cmp = "Moderate mitral regurgitation, unchanged compared with the prior study."
    r_e = compare_reports(SICK, _with(mitral=cmp))
    r_f = compare_reports(_with(mitral=cmp), SICK)
    assert r_e.significant == [0, 0, 0, 0, 1, 0]
    assert r_f.significant == [0, 0, 0, 0, 0, 1]
    assert r_e.matched == r_f.matched == 2


def test_negations_severities_and_sub_threshold_grades():
    f = extract_findings({
        "mitral": "No significant mitral regurgitation.",
        "tricuspid": "Trace tricuspid regurgitation.",
        "aortic": "The aortic valve is trileaflet, not bicuspid. Aortic cusps open normally, "
                  "no stenosis. Moderate aortic regurgitation.",
        "LV": "The left ventricle is mildly dilated, with normal systolic function.",
        "RV": "No RV systolic dysfunction.",
        "conclusion": "Severe LV dilatation.",
    })
    assert f["mitral_regurgitation"].status == "normal"
    assert f["tricuspid_regurgitation"].status == "subthreshold"  # trace: not a finding
    assert f["bicuspid_aortic_valve"].status == f["aortic_stenosis"].status == "normal"
    ar = f["aortic_regurgitation"]
    assert ar.present and ar.severity == "moderate" and (ar.structure, ar.side) == ("AV", "left")
    lv = f["lv_enlargement"]
    assert lv.present and lv.severity == "severe"  # most severe statement kept
    assert not f["lv_systolic_dysfunction"].present
    assert "rv_enlargement" not in f  # RV function is not an RV-size statement


def test_simulator_reports_round_trip():
    from echosonar.simulate.text import report_sections
    from echosonar.taxonomy import FINDINGS, labels_from_measurements

    rng = np.random.default_rng(0)
    for _ in range(60):
        m = {"sex": "M" if rng.random() < .5 else "F", "ef_pct": rng.uniform(20, 70),
             "lvedd_cm": rng.uniform(4, 6.8), "lvesd_cm": 3.0, "ivs_cm": rng.uniform(.7, 1.9),
             "lvpw_cm": rng.uniform(.7, 1.5), "la_ap_cm": rng.uniform(3, 5.6),
             "ra_minor_cm": rng.uniform(3.4, 5.8), "rv_basal_cm": rng.uniform(3, 5.4),
             "av_cusps": int(rng.choice([2, 3])), "av_opening_cm": rng.uniform(.6, 2.3),
             "mv_calc_score": rng.uniform(0, 1), "mr_jet_ratio": rng.uniform(0, .6),
             "tr_jet_ratio": rng.uniform(0, .6), "ar_jet_ratio": rng.uniform(0, .8),
             "pe_depth_cm": float(rng.choice([0, rng.uniform(.5, 2.5)])), "heart_rate_bpm": 70}
        labels = labels_from_measurements(m)
        rep = report_sections(m, labels, rng)
        found = {k: f.severity for k, f in extract_findings(rep).items() if f.present}
        want = {f.key: (None if f.severity(m) == "present" else f.severity(m))
                for f in FINDINGS if labels[f.key]}
        assert found == want, rep
        assert compare_reports(rep, rep).score == 1.0


def test_batch_keys_precision_recall_and_malformed_candidate():
    out = green_rule_batch([NORMAL, NORMAL], [NORMAL, None])
    assert out["per_study"] == [1.0, 0.0] and out["green_rule"] == 0.5
    assert out["insignificant_errors"]["b"] == 5  # the empty report omits 5 normal statements
    assert out["n_both_normal"] == 2 and out["error_types"]["c"].startswith("Misidentification")
    missed_mr = _with(mitral="No significant mitral regurgitation.")
    out = green_rule_batch([SICK, SICK, NORMAL], [SICK, missed_mr, SICK])
    # abnormal findings: 4 in the references, 5 in the candidates, 3 in both
    assert out["abnormal_precision"] == pytest.approx(3 / 5)
    assert out["abnormal_recall"] == pytest.approx(3 / 4)
    assert out["abnormal_f1"] == pytest.approx(2 * 3 / (4 + 5))
    mr = out["per_finding"]["mitral_regurgitation"]
    assert (mr["n_reference"], mr["n_candidate"], mr["recall"]) == (2, 2, 0.5)
    assert np.isnan(out["per_finding"]["aortic_stenosis"]["precision"])
    assert out["per_study"] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError):
        green_rule_batch([NORMAL], [])


CANNED = """<|assistant|>
[Explanation]:
The candidate overstates the mitral regurgitation and invents an effusion.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 1. Small pericardial effusion.
(b) Missing a finding present in the reference: 0.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 1. Severe instead of moderate MR.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 2. LVEF value; RA size.

[Matched Findings]:
3. Normal LV size; normal LV function; no pericardial effusion</s>"""


def test_llm_prompt_has_green_format():
    p = build_prompt("REF TEXT", "CAND TEXT")
    assert "REF TEXT" in p and "CAND TEXT" in p and p.index("REF TEXT") < p.index("CAND TEXT")
    for header in ("[Explanation]:", "[Clinically Significant Errors]:",
                   "[Clinically Insignificant Errors]:", "[Matched Findings]:"):
        assert header in p
    for i, cat in enumerate(ERROR_CATEGORIES):
        assert f"({'abcdef'[i]}) {cat}" in p


def test_llm_parse_canned_responses():
    r = parse_response(CANNED)
    assert r.parsed and r.significant == [1, 0, 0, 1, 0, 0] and r.insignificant[1] == 2
    assert r.matched == 3 and r.score == pytest.approx(3 / 5)
    assert "overstates" in r.explanation
    none = parse_response("[Clinically Significant Errors]:\nNo errors.\n\n"
                          "[Matched Findings]:\n4. a; b; c; d")
    assert none.significant == [0] * 6 and none.score == 1.0
    numbered = parse_response("[Clinically Significant Errors]:\n(1) False report: 2.\n"
                              "(6) Omitting a comparison: 1.\n\n[Matched Findings]:\n2. x; y")
    assert numbered.significant == [2, 0, 0, 0, 0, 1]
    zero = parse_response("[Clinically Significant Errors]:\nNo errors.\n\n"
                          "[Matched Findings]:\n0. none")
    assert zero.parsed and zero.score == 0.0  # nothing matched scores 0, as GREEN does
    assert not parse_response("[Matched Findings]:\n2. a; b").parsed  # no error block
    bad = parse_response("I cannot evaluate this.")
    assert not bad.parsed and bad.score is None
