"""GRPO rewards on crafted completions: strictness first (no credit for hacks)."""

import pytest

from echosonar.config.grpo import GRPOConfig
from echosonar.reason.rewards import (
    agreement_reward,
    box_grounding_reward,
    classification_balanced_reward,
    classification_iou_reward,
    combine_rewards,
    compute_rewards,
    format_reward,
    format_soft_reward,
    label_prevalence,
    length_penalty,
    report_reward,
)
from echosonar.taxonomy import LABEL_KEYS, REPORT_SECTIONS, VIEWS
from echosonar.textformat import render_generation, render_view_line

REPORT = {s: f"The {s} section reads normal for this study" for s in REPORT_SECTIONS}
BOXES = {"A4C": {"LV": [0.31, 0.10, 0.63, 0.57], "LA": [0.36, 0.58, 0.62, 0.86]}}
TRUTH = {k: 0 for k in LABEL_KEYS} | {"la_enlargement": 1}


def gen(findings=("LA enlargement",), reasoned=("LA enlargement",), report=None, boxes=None):
    line = render_view_line("A4C", BOXES["A4C"] if boxes is None else boxes, "big atrium",
                            list(reasoned), "volume load")
    others = [render_view_line(v, None) for v in VIEWS[1:]]  # VIEWS[0] is A4C
    return render_generation([line, *others], list(findings), report or REPORT)


GOOD = gen()


def cols(n, **kw):
    base = {"labels": [TRUTH] * n, "report": [REPORT] * n, "boxes": [BOXES] * n}
    base.update(kw)
    return base


def test_perfect_completion_scores_full_marks():
    c = cols(1)
    assert format_reward([GOOD]) == [1.0]
    assert classification_iou_reward([GOOD], **c) == [1.0]
    assert classification_balanced_reward([GOOD], **c) == [1.0]
    assert report_reward([GOOD], **c)[0] == pytest.approx(1.0, abs=1e-5)
    assert box_grounding_reward([GOOD], **c) == [pytest.approx(1.0, abs=0.02)]
    assert agreement_reward([GOOD]) == [1.0]
    assert length_penalty([GOOD], completion_lengths=[100], truncated=[False],
                          max_completion_length=768, **c) == [0.0]


def test_empty_answer_gets_no_credit():
    empty = GOOD[:GOOD.index("<answer>")] + "<answer>\n</answer>"
    blank_list = GOOD.replace("findings: LA enlargement\n", "findings:\n")
    none_list = GOOD.replace("findings: LA enlargement\n", "findings: none\n")
    bad = [empty, blank_list, none_list, ""]
    c = cols(len(bad))
    assert format_reward(bad) == [0.0] * 4
    assert classification_iou_reward(bad, **c) == [0.0] * 4
    assert classification_balanced_reward(bad, **c) == [0.0] * 4
    assert agreement_reward(bad) == [0.0] * 4
    assert report_reward([empty, ""], **cols(2)) == [0.0, 0.0]
    total, _ = compute_rewards(bad, GRPOConfig().reward_weights, "paper", **c)
    assert max(total) <= 0.0  # the default reward mix gives an empty answer nothing
    # the (off by default) skeleton-shaping bonus never gives an empty answer full marks
    assert max(format_soft_reward(bad)) <= 0.8 < format_soft_reward([GOOD])[0]


def test_duplicated_tags_are_malformed():
    twice = GOOD + "\n<answer>\nfindings: LA enlargement\n</answer>"
    dup_think = GOOD.replace("</think>", "</think>\n</think>")
    nested = "<think>\n" + GOOD
    bad = [twice, dup_think, nested]
    assert format_reward(bad) == [0.0] * 3
    assert classification_iou_reward(bad, **cols(3)) == [0.0] * 3
    assert box_grounding_reward(bad, **cols(3)) == [0.0] * 3


def test_unknown_and_duplicated_names_and_healthy_with_others():
    unknown = gen(findings=("LA enlargement", "cardiomegaly"))
    dup = gen(findings=("LA enlargement", "LA enlargement"))
    mixed = gen(findings=("healthy", "LA enlargement"))
    bad = [unknown, dup, mixed]
    assert format_reward(bad) == [0.0] * 3
    # a hack that lists every label cannot score through the balanced or IoU rewards either
    assert classification_iou_reward(bad, **cols(3)) == [0.0] * 3
    assert classification_balanced_reward(bad, **cols(3)) == [0.0] * 3


def test_unknown_view_or_structure_in_reasoning_is_malformed():
    assert format_reward([GOOD.replace("view A4C", "view A5C")]) == [0.0]
    assert format_reward([GOOD.replace("LA (", "LAA (")]) == [0.0]


def test_lenient_reasoning_earns_no_reward():
    """Reasoning the strict parser rejects earns no format reward, which gates every correctness
    reward in the paper's mix: a dropped or reordered view line, a repeated structure, an
    inverted box, empty evidence."""
    lines = GOOD.split("\n")
    a4c, a2c = lines.index(next(ln for ln in lines if ln.startswith("view A4C"))), \
        lines.index(next(ln for ln in lines if ln.startswith("view A2C")))
    swapped = lines[:]
    swapped[a4c], swapped[a2c] = lines[a2c], lines[a4c]
    bad = ["\n".join(lines[:a2c] + lines[a2c + 1:]), "\n".join(swapped),
           GOOD.replace("LA (36,58,62,86)", "LV (36,58,62,86)"),
           GOOD.replace("(31,10,63,57)", "(63,57,31,10)"),
           GOOD.replace("evidence: big atrium.", "evidence: .")]
    c = cols(len(bad))
    assert format_reward([GOOD]) == [1.0] and format_reward(bad) == [0.0] * len(bad)
    w = GRPOConfig().reward_weights
    total, per = compute_rewards(bad, w, "paper", **c)
    good_total, _ = compute_rewards([GOOD], w, "paper", **cols(1))
    assert per["format"] == [0.0] * len(bad)
    assert max(total) <= good_total[0] - 1.0  # the correctness terms are lost entirely


def test_classification_partial_credit_and_rare_labels():
    truth = {k: 0 for k in LABEL_KEYS} | {"bicuspid_aortic_valve": 1, "la_enlargement": 1}
    miss_rare = gen(findings=("LA enlargement",))
    hit_rare = gen(findings=("bicuspid aortic valve",))
    c = cols(2, labels=[truth] * 2)
    assert classification_iou_reward([miss_rare, hit_rare], **c) == [0.5, 0.5]
    # with training prevalences, missing the RARE label costs more than missing the common one
    prev = {k: 0.3 for k in LABEL_KEYS} | {"bicuspid_aortic_valve": 0.02}
    bal = classification_balanced_reward([miss_rare, hit_rare], **c, label_prevalence=prev)
    assert bal[1] > bal[0]
    assert label_prevalence([truth, {}])["bicuspid_aortic_valve"] == 0.5


def test_unlabelled_study_is_not_applicable():
    assert classification_iou_reward([GOOD], labels=[None]) == [None]
    assert report_reward([GOOD], report=[None]) == [None]
    assert combine_rewards({"classification_iou": [None]}, {"classification_iou": 1.0}) == [0.0]


def test_report_reward_prefers_the_reference_and_penalises_generic_reports():
    generic = gen(report={s: "Normal" for s in REPORT_SECTIONS})
    other = gen(report={s: "Severe dilatation with markedly reduced function" for s in
                        REPORT_SECTIONS})
    r = report_reward([GOOD, generic, other], **cols(3))
    assert r[0] > r[1] and r[0] > r[2]
    assert all(0.0 <= x <= 1.0 + 1e-6 for x in r)


def test_box_grounding_costs_hallucinated_and_wrong_boxes():
    shifted = gen(boxes={"LV": [0.5, 0.5, 0.9, 0.9], "LA": BOXES["A4C"]["LA"]})
    extra = gen(boxes={**BOXES["A4C"], "RV": [0.0, 0.0, 0.2, 0.2]})
    missing = gen(boxes={"LV": BOXES["A4C"]["LV"]})
    r = box_grounding_reward([GOOD, shifted, extra, missing], **cols(4))
    assert r[0] == pytest.approx(1.0, abs=0.02)
    assert r[1] < 0.6 and r[2] == pytest.approx(2 / 3, abs=0.02)
    assert r[3] == pytest.approx(0.5, abs=0.02)


def test_agreement_between_reasoning_and_answer():
    disagree = gen(findings=("LA enlargement",), reasoned=("RV enlargement",))
    partial = gen(findings=("LA enlargement",), reasoned=("LA enlargement", "RV enlargement"))
    healthy = gen(findings=(), reasoned=())
    assert agreement_reward([disagree, partial, healthy]) == [0.0, 0.5, 1.0]


def test_length_penalty_soft_ramp_short_and_degenerate():
    c = cols(4)
    short = gen(report={s: "ok" for s in REPORT_SECTIONS})
    loop = GOOD + "\n" + "\n".join(["findings: LA enlargement"] * 30)
    r = length_penalty([GOOD, GOOD, short, loop], completion_lengths=[700, 760, 100, 100],
                       truncated=[False, False, False, False], max_completion_length=768,
                       length_buffer=64, **c)
    start = 768 - 64
    assert r[0] == 0.0  # below the ramp
    assert r[1] == pytest.approx(-(760 - start) / 64)
    assert -1.0 <= r[2] < -0.5
    assert r[3] < -0.5
    assert length_penalty([GOOD], truncated=[True]) == [-1.0]


def test_combination_modes():
    per = {"format": [1.0, 0.0, 1.0], "classification_iou": [1.0, 1.0, 0.0],
           "agreement": [1.0, 1.0, 0.0], "length": [0.0, 0.0, -0.5]}
    w = {"format": 1.0, "classification_iou": 2.0, "agreement": 0.5, "length": 1.0}
    # paper: format x correctness + agreement + length penalty
    assert combine_rewards(per, w, "paper") == [2.5, 0.5, -0.5]
    assert combine_rewards(per, w, "sum") == [3.5, 2.5, 0.5]
    with pytest.raises(ValueError, match="reward_mode"):
        combine_rewards(per, w, "max")
    with pytest.raises(ValueError, match="unknown reward"):
        compute_rewards(["x"], {"nope": 1.0})


def test_compute_rewards_with_custom_function():
    total, per = compute_rewards(["ab", "abc"], {"format": 0.0, "size": 0.5}, "sum",
                                 funcs={"size": lambda cs, **k: [float(len(c)) for c in cs]})
    assert total == [1.0, 1.5] and set(per) == {"size"}


def test_default_rewards_cannot_be_paid_for_healthy():
    """On a study with a rare finding: the correct call > a constant 'healthy' > a wrong call;
    on a healthy study 'healthy' beats any finding. Default weights, paper mode, training
    prevalences with a rare label."""
    w = GRPOConfig().reward_weights
    prev = {k: 0.15 for k in LABEL_KEYS} | {"bicuspid_aortic_valve": 0.03, "healthy": 0.35}
    sick = {k: 0 for k in LABEL_KEYS} | {"bicuspid_aortic_valve": 1}
    healthy = {k: 0 for k in LABEL_KEYS} | {"healthy": 1}

    def total(findings, truth):
        c = gen(findings=findings, reasoned=[f for f in findings if f != "healthy"])
        t, _ = compute_rewards([c], w, "paper", **cols(1, labels=[truth]),
                               label_prevalence=[prev])
        return t[0]

    right = total(["bicuspid aortic valve"], sick)
    const_healthy = total([], sick)
    wrong = total(["LA enlargement", "mitral regurgitation"], sick)
    assert right > const_healthy > wrong
    assert right - const_healthy > 0.5  # the rare miss costs much more than a rounding error
    assert total([], healthy) > total(["LA enlargement"], healthy)


def test_citation_reward_checks_numbers_and_boxes_against_the_prompt():
    from echosonar.reason.rewards import citation_reward

    shown = {"A4C": {"boxes": {"LV": "(31,10,63,57)", "LA": "(36,58,62,86)"},
                     "numbers": {"lvedd_cm": "4.78"}}}
    exact = gen()  # cites LV and LA boxes exactly, no numbers ("big atrium")
    wrong_box = gen(boxes={"LV": [0.30, 0.10, 0.63, 0.57]})
    assert citation_reward([exact, wrong_box, "junk"], citations=[shown] * 3) == [1.0, 0.0, 0.0]
