"""The strict parser on well-formed, truncated, duplicated, unknown and empty generations, and
on adversarial reasoning (each rejected with its reason)."""

import pytest

from echosonar.reason.synthetic import synthetic_studies
from echosonar.taxonomy import FINDINGS, REPORT_SECTIONS, VIEWS
from echosonar.textformat import (
    box_to_text,
    parse_generation,
    render_generation,
    render_view_line,
    target_text,
)

REPORT = {s: "Normal." for s in REPORT_SECTIONS}
LINE = "view A4C: structures LV (31,10,63,57), LA (36,58,62,86). evidence: big. " \
       "findings: LV enlargement. implication: abnormal."
PLAX = "view PLAX: structures LV (20,20,60,60). evidence: wide LV. findings: LV enlargement. " \
       "implication: remodelling."
NOT_ACQUIRED = {v: render_view_line(v, None) for v in VIEWS}


def _lines(**acquired):
    """One line per view in VIEWS order: the given acquired lines, the rest not acquired."""
    return [acquired.get(v, NOT_ACQUIRED[v]) for v in VIEWS]


def _gen(findings=("LV enlargement",), lines=None):
    return render_generation(_lines(A4C=LINE) if lines is None else list(lines),
                             list(findings), REPORT)


def _rejects(text, reason):
    """The parser rejects ``text`` and says ``reason`` (a substring of one error)."""
    p = parse_generation(text)
    assert not p.well_formed and any(reason in e for e in p.errors), p.errors


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
    assert p.cited_boxes == [("A4C", "LV", [0.31, 0.10, 0.63, 0.57]),
                             ("A4C", "LA", [0.36, 0.58, 0.62, 0.86])]
    assert list(p.views) == list(VIEWS) and not p.views["A2C"].acquired
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
    _rejects(_gen(("LV enlargement", "LV enlargement")), "answer: duplicated finding")
    _rejects(_gen(lines=[LINE, *_lines(A4C=LINE)]), "view A4C reasoned about twice")
    twice = LINE.replace("findings: LV enlargement", "findings: LV enlargement, LV enlargement")
    _rejects(_gen(lines=_lines(A4C=twice)), "view A4C: duplicated finding 'LV enlargement'")


def test_adversarial_reasoning_is_rejected_with_its_reason():
    full = _lines(A4C=LINE, PLAX=PLAX)
    assert parse_generation(_gen(lines=full)).well_formed
    swapped = full[:]
    swapped[0], swapped[2] = swapped[2], swapped[0]
    _rejects(_gen(lines=swapped), "view lines out of order: PLAX, A2C, A4C")
    two_of_six = [PLAX, LINE]  # two acquired views, out of order, the other four left out
    _rejects(_gen(lines=two_of_six), "out of order")
    _rejects(_gen(lines=two_of_six), "no reasoning line for view A2C, PSAX_AV, A4C_COLOR")
    _rejects(_gen(lines=full[:-1]), "no reasoning line for view PLAX_COLOR")
    dup = LINE.replace("LA (36,58,62,86)", "LV (36,58,62,86)")
    _rejects(_gen(lines=_lines(A4C=dup)), "view A4C: structure LV cited twice")
    inverted = LINE.replace("(31,10,63,57)", "(90,90,10,10)")
    _rejects(_gen(lines=_lines(A4C=inverted)),
             "view A4C: box of LV (90,90,10,10) is empty or inverted")
    _rejects(_gen(lines=_lines(A4C=LINE.replace("(31,10,63,57)", "(31,10,31,57)"))),
             "empty or inverted")
    _rejects(_gen(lines=_lines(A4C=LINE.replace("evidence: big.", "evidence: ."))),
             "view A4C: empty evidence")
    _rejects(_gen(lines=_lines(A4C=LINE.replace("implication: abnormal.", "implication: ."))),
             "view A4C: empty implication")
    _rejects(_gen(("LV enlargement", "enlarged heart")), "answer: unknown finding name")
    _rejects(_gen(("healthy", "LV enlargement")), "answer: 'healthy' together with other")
    both = LINE.replace("findings: LV enlargement", "findings: healthy, LV enlargement")
    _rejects(_gen(lines=_lines(A4C=both)), "view A4C: 'healthy' together with other")


def test_renderer_writes_only_boxes_the_parser_accepts():
    # Degenerate boxes (thinner than a grid cell, clamped onto the border, inverted) are
    # widened or reordered by the renderer, never emitted as a box the parser must reject.
    for box in ([0.5, 0.5, 0.502, 0.9], [0.999, 0.2, 1.3, 0.4], [-0.2, 0.0, 0.0, 0.001],
                [0.6, 0.7, 0.2, 0.1]):
        line = render_view_line("A4C", {"LV": box}, "seen", [], "none")
        p = parse_generation(_gen([], lines=_lines(A4C=line)))
        assert p.well_formed, (box, box_to_text(box), p.errors)


def test_unknown_finding_names():
    p = parse_generation(_gen(("LV enlargement", "heart attack")))
    assert not p.well_formed and any("unknown finding" in e for e in p.errors)
    bad_line = LINE.replace("findings: LV enlargement", "findings: big heart")
    _rejects(_gen(lines=_lines(A4C=bad_line)), "view A4C: unknown finding name 'big heart'")
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
