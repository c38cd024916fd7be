"""The strict parser on well-formed, truncated, duplicated, unknown and empty generations."""

import pytest

from echosonar.reason.synthetic import synthetic_studies
from echosonar.taxonomy import FINDINGS, REPORT_SECTIONS
from echosonar.textformat import parse_generation, render_generation, target_text

REPORT = {s: "Normal." for s in REPORT_SECTIONS}
LINE = "view A4C: structures LV (31,10,63,57). evidence: big. findings: LV enlargement. " \
       "implication: abnormal."


def _gen(findings=("LV enlargement",), lines=(LINE,)):
    return render_generation(list(lines), list(findings), REPORT)


def test_well_formed_targets_parse_to_their_labels():
    for sf in synthetic_studies(20, seed=5):
        p = parse_generation(target_text(sf.reasoning, sf.labels, sf.report))
        assert p.well_formed, p.errors
        want = {f.key for f in FINDINGS if sf.labels[f.key]} or {"healthy"}
        assert p.findings == want
        assert set(p.sections) == set(REPORT_SECTIONS)
        assert all(0 <= c <= 0.99 for _, _, b in p.cited_boxes for c in b)


def test_well_formed_fields():
    p = parse_generation(_gen())
    assert p.well_formed and p.findings == {"lv_enlargement"}
    assert p.reasoning_findings == {"lv_enlargement"}
    assert p.cited_boxes == [("A4C", "LV", [0.31, 0.10, 0.63, 0.57])]
    assert parse_generation(_gen() + "\n").well_formed  # trailing whitespace is fine


@pytest.mark.parametrize("frac", [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_truncated_is_malformed(frac):
    g = _gen()
    p = parse_generation(g[:int(len(g) * frac)])
    assert not p.well_formed and p.errors


@pytest.mark.parametrize("extra", ["<think>", "</think>", "<answer>", "</answer>"])
def test_duplicated_tags(extra):
    p = parse_generation(_gen() + extra)
    assert not p.well_formed
    assert any("exactly one" in e for e in p.errors)


def test_duplicated_findings_and_views():
    assert not parse_generation(_gen(("LV enlargement", "LV enlargement"))).well_formed
    assert not parse_generation(_gen(lines=(LINE, LINE))).well_formed


def test_unknown_finding_names():
    p = parse_generation(_gen(("LV enlargement", "heart attack")))
    assert not p.well_formed and any("unknown finding" in e for e in p.errors)
    bad_line = LINE.replace("findings: LV enlargement", "findings: big heart")
    assert not parse_generation(_gen(lines=(bad_line,))).well_formed
    assert not parse_generation(_gen(("lv_enlargement",))).well_formed  # keys are not names


def test_empty_answer_and_empty_blocks():
    g = _gen()
    a0, a1 = g.index("<answer>") + len("<answer>"), g.index("</answer>")
    assert not parse_generation(g[:a0] + "\n" + g[a1:]).well_formed
    assert not parse_generation(g.replace("findings: LV enlargement\n", "findings:\n"))\
        .well_formed
    assert not parse_generation(g.replace("findings: LV enlargement\n", "findings: none\n"))\
        .well_formed
    t0, t1 = g.index("<think>") + len("<think>"), g.index("</think>")
    assert not parse_generation(g[:t0] + "\n" + g[t1:]).well_formed
    assert not parse_generation("").well_formed


def test_other_violations():
    assert not parse_generation(_gen(("healthy", "LV enlargement"))).well_formed
    assert not parse_generation("preamble " + _gen()).well_formed
    g = _gen()
    assert not parse_generation(g.replace("Conclusion: Normal\n", "")).well_formed
    assert not parse_generation(g.replace("(31,10,63,57)", "(31,10,63)")).well_formed
    assert not parse_generation(g.replace("LV (31", "XX (31")).well_formed
    swapped = g.replace("Left ventricle:", "TMP:").replace("Right ventricle:", "Left ventricle:")
    assert not parse_generation(swapped.replace("TMP:", "Right ventricle:")).well_formed
    think = g[g.index("<think>"):g.index("</think>") + 8]
    assert not parse_generation(g.replace(think, "") + think).well_formed  # order


def test_score_predictions_perfect_and_malformed():
    from echosonar.reason.generate import score_predictions
    from echosonar.taxonomy import LABEL_KEYS

    studies = synthetic_studies(30, seed=8)

    def pred(sf, text):
        p = parse_generation(text)
        return {"key": sf.key, "text": text, "well_formed": p.well_formed, "errors": p.errors,
                "findings": sorted(p.findings), "sections": p.sections,
                "scores": {k: float(sf.labels[k]) for k in LABEL_KEYS}}

    good = [pred(sf, target_text(sf.reasoning, sf.labels, sf.report)) for sf in studies]
    m = score_predictions(good, studies, {k: 0.5 for k in LABEL_KEYS})
    assert m["parse_rate"] == 1.0 and m["macro_bacc_generated"] == 1.0
    assert m["macro_bacc_head@0.5"] == 1.0 and m["macro_auroc_head"] == 1.0
    assert m["bleu4"] == pytest.approx(1.0) and m["rougeL"] == pytest.approx(1.0)
    bad = [pred(sf, "") for sf in studies]
    m = score_predictions(bad, studies)
    assert m["parse_rate"] == 0.0 and m["macro_bacc_generated"] == 0.5 and m["bleu4"] == 0.0
