"""End to end with the real stages: a tiny quickstart, analyze (single, batch, a real DICOM).

The quickstart's models are barely trained (tiny budget), so these tests check the product's
contracts — schema, pages, warnings, files — not accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from echosonar.app.bundle import BundleError, load_bundle, read_bundle_spec
from echosonar.app.quickstart import held_out_files
from echosonar.app.result import validate
from echosonar.cli import main
from echosonar.taxonomy import VIEWS

pytestmark = pytest.mark.slow


def test_quickstart_leaves_a_bundle_and_a_report(tiny_quickstart):
    q = tiny_quickstart
    assert [r.name for r in q.results] == ["simulate", "ingest", "view_classifier", "detector",
                                           "encoder", "features", "ingest_e2e",
                                           "features_e2e", "sft", "grpo", "bundle",
                                           "evaluate", "analyze"]
    spec = read_bundle_spec(q.out)
    assert set(spec.components) == {"view_classifier", "detector", "encoder", "vlm"}
    assert spec.thresholds_source == "bundle"
    summary = json.loads((q.out / "quickstart.json").read_text())
    assert summary["report"].endswith("example/report.html")
    metrics = json.loads((q.eval / "metrics_test.json").read_text())
    assert metrics["source"]["protocol"] == "end-to-end" and "controls" in metrics
    result = json.loads((q.example / "result.json").read_text())
    assert validate(result) == []
    page = (q.example / "report.html").read_text()
    for view in {c["view"] for c in result["clips"]} | set(VIEWS):
        assert f'id="view-{view}"' in page
    for f in result["findings"]:
        assert f["name"] in page and f'data-finding="{f["key"]}"' in page
    assert "Research use only" in page
    # simulated DICOMs carry fake patient identifiers: none may reach the outputs
    for leak in ("SIMULATED^PATIENT", "SIM00000", ".dcm", str(q.sim)):
        assert leak not in page and leak not in json.dumps(result)


def test_analyze_real_dicom_fixture(tiny_quickstart, tmp_path):
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("examples_ybr_color.dcm"))
    rc = main(["analyze", str(src), "--model", str(tiny_quickstart.out), "--out",
               str(tmp_path / "out"), "--max-new-tokens", "32"])
    assert rc == 0
    result = json.loads((tmp_path / "out/result.json").read_text())
    assert validate(result) == []
    assert len(result["clips"]) == 1 and result["clips"][0]["view_source"] == "classifier"
    assert result["clips"][0]["cm_per_px"] is not None  # from the Ultrasound Regions
    assert any(w.startswith("missing views:") for w in result["warnings"])
    assert (tmp_path / "out/report.html").is_file()


def test_analyze_batch_keeps_going(tiny_quickstart, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "a").mkdir()
    for f in held_out_files(tiny_quickstart):
        shutil.copy(f, studies / "a" / f.name)
    (studies / "b").mkdir()
    (studies / "b" / "junk.dcm").write_bytes(b"not a dicom at all" * 10)
    rc = main(["analyze", "--batch", str(studies), "--model", str(tiny_quickstart.out),
               "--out", str(tmp_path / "out"), "--max-new-tokens", "24"])
    assert rc == 1  # one study failed
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["ok"] == 1 and summary["failed"] == 1
    ok = next(r for r in summary["rows"] if r["status"] == "ok")
    assert (tmp_path / "out" / ok["folder"] / "report.html").is_file()
    bad = next(r for r in summary["rows"] if r["status"] == "failed")
    assert "no readable echo clip" in bad["error"]
    assert "junk" not in (tmp_path / "out/summary.md").read_text()


def test_bundle_errors_name_the_part(tiny_quickstart, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_quickstart.out, broken,
                    ignore=shutil.ignore_patterns("data", "runs", "eval", "example", "logs"))
    shutil.rmtree(broken / "encoder")
    with pytest.raises(BundleError, match="missing component 'encoder'.*train encoder"):
        read_bundle_spec(broken)
    # override with the original encoder: loads
    b = load_bundle(broken, {"encoder": tiny_quickstart.out / "encoder"})
    assert b.encoder is not None
    (broken / "detector" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot load 'detector'"):
        load_bundle(broken, {"encoder": tiny_quickstart.out / "encoder"})
    assert main(["analyze", str(tmp_path), "--model", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o")]) == 2


def test_bundle_command_assembles_a_usable_bundle(tiny_quickstart, tmp_path):
    q = tiny_quickstart
    out = tmp_path / "mine"
    assert main(["bundle", "--out", str(out), "--detector", str(q.out / "detector"),
                 "--encoder", str(q.out / "encoder"), "--vlm", str(q.out / "vlm"),
                 "--view-classifier", str(q.out / "view_classifier"),
                 "--features", str(q.features), "--copy", "--max-new-tokens", "16"]) == 0
    spec = read_bundle_spec(out)
    assert spec.thresholds_source == "bundle" and spec.max_new_tokens == 16
    assert all(spec.components[k].parent == out
               for k in ("view_classifier", "detector", "encoder", "vlm"))
    assert not list(out.glob(".*.tmp"))
    # the bundle analyses a held-out study
    files = [str(f) for f in held_out_files(q)]
    assert main(["analyze", *files, "--model", str(out), "--out", str(tmp_path / "res"),
                 "--no-html"]) == 0
    assert validate(json.loads((tmp_path / "res" / "result.json").read_text())) == []
    # a folder that is not the named component fails before anything is written
    bad = tmp_path / "bad"
    with pytest.raises(SystemExit, match="cannot load detector"):
        main(["bundle", "--out", str(bad), "--detector", str(q.out / "encoder"),
              "--encoder", str(q.out / "encoder"), "--vlm", str(q.out / "vlm")])
    assert not bad.exists()
