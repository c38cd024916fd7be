"""The app's use of the OOD guard, with fake stages (no models): rejected clips become OTHER and
are never analysed, a study without a cardiac clip is not assessable, an unusual clip withholds
the findings, and result.json / report.html say so."""

from __future__ import annotations

import pytest

from echosonar.app.pipeline import analyze_study
from echosonar.app.report_html import render_report
from echosonar.app.result import validate
from echosonar.taxonomy import REPORT_SECTIONS

from .conftest import fake_dicom


def _guard(levels):
    """A fake ``stages.assess_ood`` giving ``levels[view]`` (default "in") per clip."""

    def assess(study, model):
        out = []
        for c in study.clips:
            lv = levels.get(c.view, "in")
            score = {"in": 3.0, "unusual": 9.0, "out": 40.0}[lv]
            out.append({"score": score, "energy": -5.0, "warn_at": 8.0, "reject_at": 20.0,
                        "level": lv, "reason": None if lv == "in" else f"fake {lv} reason"})
        return out

    return assess


@pytest.fixture
def seen(fake_stages):
    """Records the views of the clips that reach detection."""
    calls: list[list[str]] = []
    features = fake_stages.features

    def spy(bundle, study, cfg, timer):
        calls.append([c.view for c in study.clips])
        return features(bundle, study, cfg, timer)

    fake_stages.features = spy
    return calls


def test_in_distribution_study_is_analysed(study_dir, fake_bundle, fake_stages, seen):
    fake_stages.assess_ood = _guard({})
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result
    assert validate(r) == [] and r["status"] == "ok"
    assert r["ood"] == {"checked": True, "level": "in", "withheld": False, "reason": None}
    assert all(c["ood"]["level"] == "in" and c["ood"]["score"] == 3.0 for c in r["clips"])
    assert any(f["positive"] for f in r["findings"]) and r["answer_findings"]
    assert 'id="ood"' not in render_report(r)


def test_rejected_clip_is_other_and_not_analysed(study_dir, fake_bundle, fake_stages, seen):
    fake_stages.assess_ood = _guard({"PLAX": "out"})
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result
    assert validate(r) == [] and r["status"] == "ok"
    plax = next(c for c in r["clips"] if c["ood"]["classifier_view"] == "PLAX")
    assert plax["view"] == "OTHER" and plax["structures"] == [] and plax["measurements"] == {}
    assert seen == [["A4C", "A4C_COLOR"]]  # the rejected clip never reaches detection
    assert any("not analysed: fake out reason" in w and "said PLAX" in w for w in r["warnings"])
    assert not r["ood"]["withheld"] and r["ood"]["level"] == "out"
    assert "not analysed" in render_report(r)


def test_no_cardiac_clip_is_not_assessable(tmp_path, fake_bundle, fake_stages, seen):
    d = tmp_path / "s"
    d.mkdir()
    fake_dicom(d / "a.dcm", "A4C")
    fake_dicom(d / "b.dcm", "PLAX")
    fake_stages.assess_ood = _guard({"A4C": "out", "PLAX": "out"})
    r = analyze_study(d, fake_bundle, stages=fake_stages).result
    assert validate(r) == []
    assert r["status"] == "not_assessable" and seen == []  # nothing detected or generated
    assert {c["view"] for c in r["clips"]} == {"OTHER"}
    assert r["ood"]["withheld"] and "no clip shows a standard cardiac view" in r["ood"]["reason"]
    assert all(f["positive"] is None for f in r["findings"])
    assert r["answer_findings"] == [] and r["generation"] == ""
    assert [s["text"] for s in r["report"]["sections"]] == [""] * len(REPORT_SECTIONS)
    assert r["warnings"][0].startswith("NOT ASSESSABLE")
    html = render_report(r)
    assert 'id="ood"' in html and "Not assessable" in html


def test_unusual_clip_withholds_findings(study_dir, fake_bundle, fake_stages, seen):
    fake_stages.assess_ood = _guard({"A4C": "unusual"})
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result
    assert validate(r) == [] and r["status"] == "ok"
    assert seen == [["A4C", "A4C_COLOR", "PLAX"]]  # analysed, but nothing is called
    assert r["ood"]["withheld"] and r["ood"]["level"] == "unusual"
    assert "clip 1 A4C (OOD distance 9.00 >= 8.00)" in r["ood"]["reason"]
    assert all(f["positive"] is None and not f["in_answer"] for f in r["findings"])
    assert r["answer_findings"] == []
    assert r["generation"]  # the raw output stays, for audit
    assert any("findings withheld" in w for w in r["warnings"])
    assert r["warnings"][0].startswith("FINDINGS WITHHELD")
    html = render_report(r)
    assert "Findings withheld" in html and 'data-ood="unusual"' in html
    assert ">Withheld<" in html


def test_classifier_without_statistics_warns(study_dir, fake_bundle, fake_stages):
    fake_stages.assess_ood = lambda study, model: [
        {"score": None, "energy": -3.0, "warn_at": None, "reject_at": None, "level": None,
         "reason": "no statistics"} for _ in study.clips]
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result
    assert validate(r) == [] and not r["ood"]["checked"] and not r["ood"]["withheld"]
    assert any("no OOD statistics" in w for w in r["warnings"])


def test_old_results_without_ood_still_validate(study_dir, fake_bundle, fake_stages):
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result  # no guard in stages
    assert r["ood"]["checked"] is False and all(c["ood"] is None for c in r["clips"])
    del r["ood"]
    for c in r["clips"]:
        del c["ood"]
    assert validate(r) == []
