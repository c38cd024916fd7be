"""The pipeline's bookkeeping and the report page, with fake stages (no models)."""

from __future__ import annotations

import copy
import json
import re

import pytest

from echosonar.app.pipeline import AnalysisError, analyze_study
from echosonar.app.report_html import RUO, render_report
from echosonar.app.result import assert_valid, validate
from echosonar.taxonomy import LABEL_KEYS, VIEWS

from .conftest import fake_dicom


def test_result_is_valid_and_complete(study_dir, fake_bundle, fake_stages):
    calls = []
    a = analyze_study(study_dir, fake_bundle, progress=lambda s, f: calls.append((s, f)),
                      stages=fake_stages)
    r = a.result
    assert validate(r) == []
    assert [c["view"] for c in r["clips"]] == ["A4C", "A4C_COLOR", "PLAX"]
    assert r["views"]["missing"] == ["A2C", "PSAX_AV", "PLAX_COLOR"]
    assert any(w.startswith("missing views: A2C, PSAX_AV, PLAX_COLOR") for w in r["warnings"])
    assert any("skipped file 1 of 1" in w for w in r["warnings"])
    f = {x["key"]: x for x in r["findings"]}
    assert f["lv_enlargement"]["positive"] and f["lv_enlargement"]["in_answer"]
    assert f["mitral_regurgitation"]["positive"] and not f["mitral_regurgitation"]["in_answer"]
    assert not f["bicuspid_aortic_valve"]["assessable"]
    assert r["answer_findings"] == ["lv_enlargement"]
    assert r["reasoning"]["well_formed"] and len(r["reasoning"]["views"]) == len(VIEWS)
    a4c = r["clips"][0]
    lv = next(s for s in a4c["structures"] if s["name"] == "LV")
    assert lv["present"] and lv["box_es"] != lv["box_ed"]
    assert set(r["timing_s"]) >= {"ingest", "view", "detect", "encode", "generate", "total"}
    assert r["peak_memory_mb"] is None or r["peak_memory_mb"] > 0
    assert [s for s, _ in calls][:1] == ["ingest"] and calls[-1] == ("done", 1.0)
    # no file names anywhere (they may carry identifiers)
    blob = json.dumps(r)
    for name in ("a4c.dcm", "plax.dcm", "notes.txt", str(study_dir)):
        assert name not in blob
    assert set(a.keyframes) == {0, 1, 2} and a.keyframes[0]["ed"].shape == (1, 32, 32)


def test_validator_catches_errors(study_dir, fake_bundle, fake_stages):
    r = analyze_study(study_dir, fake_bundle, stages=fake_stages).result
    bad = copy.deepcopy(r)
    bad["findings"] = bad["findings"][1:]
    assert validate(bad)
    bad = copy.deepcopy(r)
    bad["clips"][0]["view"] = "A5C"
    assert any("A5C" in e for e in validate(bad))
    bad = copy.deepcopy(r)
    bad["clips"][0]["structures"][0]["box_ed"] = [0.1, 0.2, 1.5, 0.3]
    assert any("maximum" in e for e in validate(bad))
    bad = copy.deepcopy(r)
    bad["patient_name"] = "X"
    with pytest.raises(ValueError, match="unexpected key"):
        assert_valid(bad)


def test_unknown_view_is_classified_with_warning(tmp_path, fake_bundle, fake_stages):
    fake_dicom(tmp_path / "x.dcm", "UNLABELLED")
    r = analyze_study([tmp_path / "x.dcm"], fake_bundle, stages=fake_stages).result
    assert r["clips"][0]["view_source"] == "classifier"
    assert r["clips"][0]["keyframes_estimated"]  # ED/ES from the LV track, not from ingest
    assert r["clips"][0]["ed_index"] != r["clips"][0]["es_index"]
    assert any("low confidence" in w for w in r["warnings"])


def test_no_readable_clip_is_a_clear_error(tmp_path, fake_bundle, fake_stages):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(AnalysisError, match="no readable echo clip.*not a DICOM"):
        analyze_study([tmp_path / "a.txt"], fake_bundle, stages=fake_stages)


def test_report_page_shows_everything(study_dir, fake_bundle, fake_stages):
    a = analyze_study(study_dir, fake_bundle, stages=fake_stages)
    page = render_report(a.result, a.keyframes)
    assert RUO in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # self-contained
    assert "<link" not in page and "src=\"http" not in page
    for view in VIEWS:  # acquired and missing views all have a row
        assert f'id="view-{view}"' in page
    for f in a.result["findings"]:
        assert f'data-finding="{f["key"]}"' in page and f["name"] in page
    for s in a.result["report"]["sections"]:
        assert s["title"] in page
    imgs = re.findall(r'src="data:image/png;base64,', page)
    assert len(imgs) == 2 * len(a.result["clips"])
    # every cited structure is a chip linked to a highlightable box of its view
    for rv in a.result["reasoning"]["views"]:
        for s in rv["structures"]:
            assert f'class="cite" href="#view-{rv["view"]}" data-view="{rv["view"]}" ' \
                   f'data-s="{s}"' in page
            assert f'<rect data-view="{rv["view"]}" data-s="{s}"' in page
    assert "notes.txt" not in page and "a4c.dcm" not in page


def test_report_escapes_model_text(study_dir, fake_bundle, fake_stages):
    a = analyze_study(study_dir, fake_bundle, stages=fake_stages)
    r = copy.deepcopy(a.result)
    r["report"]["sections"][0]["text"] = "<script>alert(1)</script>"
    r["generation"] = "<img src=x onerror=alert(1)>"
    page = render_report(r, {})
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "keyframe not available" in page


def test_label_score_count_checked(study_dir, fake_bundle, fake_stages):
    real = fake_stages.generate
    fake_stages.generate = lambda *a: (real(*a)[0], [0.5] * (len(LABEL_KEYS) - 1))
    with pytest.raises(AnalysisError, match="label scores"):
        analyze_study(study_dir, fake_bundle, stages=fake_stages)


def test_file_names_never_reach_the_result(tmp_path, fake_bundle, fake_stages):
    real_ingest = fake_stages.ingest

    def ingest(paths, cfg):
        studies, skipped = real_ingest(paths, cfg)
        for s in studies:
            s.warnings = [f"{c.source}: no frame time; assumed 30 fps" for c in s.clips]
        skipped.append(("DOE_JANE_copy.dcm", "duplicate of DOE_JANE_1.dcm (same SOP instance)"))
        return studies, skipped

    fake_stages.ingest = ingest
    fake_dicom(tmp_path / "DOE_JANE_1.dcm", "A4C")
    r = analyze_study([tmp_path], fake_bundle, stages=fake_stages).result
    blob = json.dumps(r)
    assert "DOE_JANE" not in blob
    assert "no frame time; assumed 30 fps" in r["warnings"]
    assert any("duplicate of another file" in w for w in r["warnings"])


def test_decoding_is_guided_by_the_bundle_thresholds(study_dir, fake_bundle, fake_stages):
    from echosonar.config import load_config

    seen, engines = [], []
    real = fake_stages.generate

    def spy(vlm, sf, max_new_tokens, thresholds=None, engine="auto"):
        seen.append(thresholds)
        engines.append(engine)
        return real(vlm, sf, max_new_tokens, thresholds, engine)

    stages = copy.copy(fake_stages)  # a SimpleNamespace of stage functions
    stages.generate = spy
    cfg = load_config()
    analyze_study(study_dir, fake_bundle, cfg, stages=stages)
    assert seen[-1] == fake_bundle.spec.thresholds  # app.decoding defaults to guided
    assert engines[-1] == "auto"
    cfg.app.decoding, cfg.app.engine = "free", "int8"
    analyze_study(study_dir, fake_bundle, cfg, stages=stages)
    assert seen[-1] is None and engines[-1] == "int8"  # app.engine reaches the decode step
    cfg.app.decoding = "beam"
    with pytest.raises(AnalysisError, match="'guided' or 'free'"):
        analyze_study(study_dir, fake_bundle, cfg, stages=stages)
