"""The default quickstart: the shipped model on a freshly simulated study and the real cine."""

from __future__ import annotations

import json

import pytest

from echosonar.app.quickstart import DEMO_SEED, real_cine, run_demo
from echosonar.app.result import validate
from echosonar.taxonomy import FINDING_BY_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart_demo")
    return out, run_demo(out, studies=1, seed=DEMO_SEED, log=lambda m: None)


def test_index_links_every_report(demo):
    out, studies = demo
    assert [d.source for d in studies] == ["simulated"] + (["real"] if real_cine() else [])
    page = (out / "index.html").read_text()
    assert "Research use only" in page
    for d in studies:
        assert d.status == "ok"
        assert f"analysis/{d.folder}/report.html" in page
        assert (out / "analysis" / d.folder / "report.html").is_file()
    saved = json.loads((out / "demo.json").read_text())
    assert saved["seed"] == DEMO_SEED and len(saved["studies"]) == len(studies)
    # the examples were analysed without their ground truth
    assert not list((out / "examples" / "studies").rglob("study.json"))


def test_simulated_study_reads_right(demo):
    """Views named right; the findings table, the stated answer and every reasoning line agree;
    healthy never stated beside a finding; reasoning lines cite structures."""
    out, studies = demo
    d = studies[0]
    assert sorted(d.views) == sorted(d.truth_views)
    result = json.loads((out / "analysis" / d.folder / "result.json").read_text())
    assert validate(result) == []
    positive = [f["key"] for f in result["findings"] if f["positive"]]
    assert result["answer_findings"] == positive == d.answer
    assert not ("healthy" in positive and len(positive) > 1)
    stated = {FINDING_BY_KEY[k].name for k in positive}
    for line in result["reasoning"]["views"]:
        if line.get("acquired", True):
            assert set(line["findings"]) <= stated, line["text"]
            assert line["structures"], f"view {line['view']} cites no structure"


@pytest.mark.skipif(real_cine() is None, reason="pydicom's real A4C cine is not installed")
def test_real_cine_is_analysed(demo):
    out, studies = demo
    d = studies[-1]
    assert d.source == "real" and d.status == "ok" and len(d.views) == 1
    result = json.loads((out / "analysis" / d.folder / "result.json").read_text())
    assert validate(result) == []
