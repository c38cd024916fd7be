"""Targets without simulator truth: reports from labels or the user's text, reasoning from the
detector's evidence. Every target must parse with the strict parser and say only what the
prompt shows."""

from __future__ import annotations

import numpy as np
import pytest

from echosonar.dataset.reports import report_from_labels, report_target, split_report
from echosonar.phrases import extract_findings
from echosonar.reason.evidence_targets import evidence_reasoning, fill_targets
from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.taxonomy import FINDINGS, LABEL_KEYS, REPORT_SECTIONS, STRUCTURES, VIEWS
from echosonar.textformat import box_to_text, parse_generation, target_text


def _labels(*pos: str) -> dict[str, int]:
    out = {f.key: int(f.key in pos) for f in FINDINGS}
    out["healthy"] = int(not pos)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_report_from_labels_reads_back_exactly_the_positive_findings(seed):
    rng = np.random.default_rng(seed)
    pos = tuple(f.key for f in FINDINGS if rng.random() < 0.3)
    rep = report_from_labels(_labels(*pos))
    assert list(rep) == list(REPORT_SECTIONS) and all(rep.values())
    text = ". ".join(rep[s] for s in REPORT_SECTIONS[:-1])
    found = extract_findings(text)
    assert set(found) == set(pos)
    assert set(extract_findings(rep["conclusion"])) == set(pos)
    assert all(sev == "present" for sev in found.values())  # no measurements: no grade


def test_report_severity_from_measurements_when_given():
    rep = report_from_labels(_labels("lv_systolic_dysfunction"), {"ef_pct": 25.0})
    assert rep["LV"].startswith("Severe LV systolic dysfunction")
    assert report_from_labels(_labels("lv_systolic_dysfunction"))["LV"].startswith(
        "LV systolic dysfunction present")


def test_user_report_split_into_sections_rest_from_labels():
    text = ("Left ventricle: Severely dilated, EF 25%.\nMitral valve: Moderate mitral "
            "regurgitation. Small pericardial effusion. Impression: dilated cardiomyopathy.")
    got, _ = split_report(text)
    assert got["LV"] == "Severely dilated, EF 25%"
    assert got["mitral"].startswith("Moderate mitral regurgitation")
    assert got["conclusion"] == "dilated cardiomyopathy"
    rep, filled, unknown = report_target(text, _labels("lv_enlargement"))
    assert "RV" in filled and "LV" not in filled and not unknown
    assert rep["RV"] == "No RV enlargement"
    rep, filled, unknown = report_target({"LV": "ok", "Diagnosis": "x"}, _labels())
    assert rep["LV"] == "ok" and unknown == ["Diagnosis"]


def _view(view: str, rng: np.random.Generator, boxes: bool = True) -> ViewFeatures:
    k = len(STRUCTURES)
    bx = {}
    if boxes:
        for s in rng.choice(STRUCTURES, size=4, replace=False):
            x0, y0 = rng.random(2) * 0.6
            bx[str(s)] = [float(x0), float(y0), float(x0 + 0.001 + rng.random() * 0.3),
                          float(y0 + rng.random() * 0.3)]
    meas = {"lvedd_cm": float(4 + rng.random() * 3), "ef_proxy_pct": float(rng.random() * 80),
            "junk": float("nan")}
    return ViewFeatures(view, np.zeros((3, 4), np.float32), np.zeros((k, 4), np.float32),
                        np.zeros(k, np.float32), boxes=bx, measurements=meas)


@pytest.mark.parametrize("seed", range(12))
def test_evidence_reasoning_parses_and_cites_only_the_prompts_evidence(seed):
    rng = np.random.default_rng(seed)
    views = [str(v) for v in rng.choice(VIEWS, size=int(rng.integers(1, 6)), replace=False)]
    vfs = [_view(v, rng, boxes=bool(rng.random() < 0.85)) for v in views]
    pos = tuple(f.key for f in FINDINGS if rng.random() < 0.25)
    sf = StudyFeatures(f"s{seed}", vfs, labels=_labels(*pos),
                       report=report_from_labels(_labels(*pos)))
    p = parse_generation(target_text(evidence_reasoning(sf), sf.labels, sf.report))
    assert p.well_formed, p.errors
    for v in vfs:
        line = p.views[v.view]
        assert line.acquired
        # every cited box is the detector's, verbatim on the grid; nothing else is cited
        assert set(line.structures) == set(v.boxes)
        for s, b in v.boxes.items():
            assert box_to_text(line.structures[s]) == box_to_text(b)
        # evidence = the measurements as the prompt prints them; NaN ones are not printed
        assert f"lvedd_cm {v.measurements['lvedd_cm']:.3g}" in line.evidence
        assert "junk" not in line.evidence
        # findings: the positive labels this view can show, nothing else
        want = {f.name for f in FINDINGS if f.key in pos and v.view in f.views}
        assert set(line.findings) == want
    for v in set(VIEWS) - set(views):
        assert not p.views[v].acquired


def test_several_clips_of_a_view_cite_the_last_one_like_guided_decoding():
    rng = np.random.default_rng(0)
    a, b = _view("A4C", rng), _view("A4C", rng)
    sf = StudyFeatures("k", [a, b], labels=_labels())
    p = parse_generation(target_text(evidence_reasoning(sf), sf.labels, report_from_labels(
        sf.labels)))
    assert p.well_formed and set(p.views["A4C"].structures) == set(b.boxes)


def test_evidence_reasoning_refuses_a_study_it_cannot_reason_about():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no labels"):
        evidence_reasoning(StudyFeatures("k", [_view("A4C", rng)]))
    with pytest.raises(ValueError, match="no view of"):
        evidence_reasoning(StudyFeatures("k", [_view("A4C", rng)][:0], labels=_labels()))


def test_fill_targets_writes_missing_reasoning_that_sft_reads(tmp_path):
    from echosonar.io.features import read_index, write_index
    from echosonar.reason.data import load_split, sft_target
    from echosonar.reason.synthetic import write_synthetic_cache

    write_synthetic_cache(tmp_path, {"train": 3, "val": 1})
    index = read_index(tmp_path)
    entries = index.pop("studies")
    keep = entries[0]["reasoning"]
    for e in entries[1:]:
        e["reasoning"] = None  # a user's study: no reasoning until its evidence exists
    write_index(tmp_path, entries, **index)
    with pytest.raises(ValueError, match="no reasoning"):
        load_split(tmp_path, "train")
    assert fill_targets(str(tmp_path)) == {"written": 3, "kept": 1}
    after = read_index(tmp_path)
    assert after["targets"]["reasoning"] == "echosonar.reason.evidence_targets"
    assert after["studies"][0]["reasoning"] == keep  # a given target is not replaced
    for sf in load_split(tmp_path, "train"):
        assert parse_generation(sft_target(sf)).well_formed
    assert set(after["studies"][1]["labels"]) == set(LABEL_KEYS)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("flags", [False, True])
def test_every_citation_of_the_evidence_and_copy_targets_equals_the_prompts(seed, flags):
    """Property: the grounding scorer finds every box and number of these targets verbatim in
    the prompt the model reads (with or without reference-range flags)."""
    from echosonar.reason.data import sft_target
    from echosonar.reason.grounding import fidelity_summary
    from echosonar.reason.prompt import build_prompt, measurement_text

    rng = np.random.default_rng(100 + seed)
    views = [str(v) for v in rng.choice(VIEWS, size=int(rng.integers(1, 6)), replace=False)]
    vfs = [_view(v, rng) for v in views]
    for v in vfs:
        v.measurements["tr_jet_ratio"] = float(rng.random() * 0.5)
    pos = tuple(f.key for f in FINDINGS if rng.random() < 0.25)
    sf = StudyFeatures(f"s{seed}", vfs, labels=_labels(*pos),
                       report=report_from_labels(_labels(*pos)))
    prompt = build_prompt(sf, measurement_flags=flags).text
    for writer in ("evidence", "copy"):
        text = sft_target(sf, writer, flags)
        f = fidelity_summary([text], [sf])
        assert f["citations"] > 0 and f["citation_exact_rate"] == 1.0, (writer, f)
        for v in vfs:  # the evidence is the prompt's measurement text, flags and all
            for k in ("lvedd_cm", "tr_jet_ratio"):
                shown = measurement_text(k, v.measurements[k], flags)
                assert shown in prompt and shown in text, (writer, shown)


def test_implication_names_where_label_and_measurement_disagree():
    rng = np.random.default_rng(0)
    v = _view("A4C_COLOR", rng)
    v.measurements = {"tr_jet_ratio": 0.45, "mr_jet_ratio": 0.02}
    sick = StudyFeatures("a", [v], labels=_labels("tricuspid_regurgitation"))
    assert "consistent with tricuspid regurgitation" in evidence_reasoning(sick)
    well = StudyFeatures("b", [v], labels=_labels())
    assert "tricuspid regurgitation cut-off crossed but not called" in evidence_reasoning(well)
    v.measurements = {"tr_jet_ratio": 0.05}
    assert ("tricuspid regurgitation from the images, no measurement past its cut-off"
            in evidence_reasoning(sick))


def test_copy_probe_target_decides_nothing():
    from echosonar.reason.data import sft_target

    rng = np.random.default_rng(1)
    sf = StudyFeatures("k", [_view("A4C", rng)], labels=_labels("rv_enlargement"))
    text = sft_target(sf, "copy")
    assert "findings: none" in text and "RV enlargement." not in text
    assert text.startswith("<think>") and text.endswith("</think>") and "<answer>" not in text
    with pytest.raises(ValueError, match="unknown SFT target writer"):
        sft_target(sf, "mystery")


def test_evidence_answer_lists_exactly_what_the_reasoning_concludes():
    """A finding no acquired view can show (bicuspid valve without PSAX_AV) is not in the
    evidence target's answer; what remains agrees with the reasoning lines."""
    from echosonar.reason.data import sft_target

    rng = np.random.default_rng(2)
    sf = StudyFeatures("k", [_view("A4C", rng)],
                       labels=_labels("bicuspid_aortic_valve", "rv_enlargement"),
                       report=report_from_labels(_labels("rv_enlargement")))
    p = parse_generation(sft_target(sf, "evidence"))
    assert p.well_formed and p.findings == {"rv_enlargement"} == p.reasoning_findings
    only = StudyFeatures("h", sf.views, labels=_labels("bicuspid_aortic_valve"),
                         report=report_from_labels(_labels()))
    assert parse_generation(sft_target(only, "evidence")).findings == {"healthy"}


def test_evidence_target_report_follows_its_answer():
    from echosonar.reason.data import sft_target

    rng = np.random.default_rng(3)
    sf = StudyFeatures("k", [_view("A4C", rng), _view("A4C_COLOR", rng)],
                       labels=_labels("tricuspid_regurgitation", "bicuspid_aortic_valve"),
                       report={s: "stored text" for s in REPORT_SECTIONS})
    p = parse_generation(sft_target(sf, "evidence", report="labels"))
    assert p.well_formed and p.findings == {"tricuspid_regurgitation"}
    assert p.sections["tricuspid"] == "Tricuspid regurgitation present"
    assert p.sections["conclusion"] == "Tricuspid regurgitation present"
    assert "bicuspid" not in p.sections["aortic"].replace("No bicuspid", "")
    stored = parse_generation(sft_target(sf, "evidence", report="reference"))
    assert stored.sections["LV"] == "stored text"
    with pytest.raises(ValueError, match="unknown SFT report writer"):
        sft_target(sf, "evidence", report="poem")
