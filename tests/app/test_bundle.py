"""Bundle layout and loader errors (no real models: a fake stages object loads them)."""

from __future__ import annotations

import json

import pytest

from echosonar.app.bundle import (
    BUNDLE_FILE,
    BundleError,
    load_bundle,
    read_bundle_spec,
    write_bundle,
)
from echosonar.taxonomy import LABEL_KEYS


def _parts(root, names=("view_classifier", "detector", "encoder", "vlm")):
    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
        (root / n / "config.json").write_text(json.dumps({"kind": n, "sha256": "ab" * 32}))


def test_default_layout_without_bundle_json(tmp_path, fake_stages):
    _parts(tmp_path)
    spec = read_bundle_spec(tmp_path)
    assert spec.thresholds_source == "default" and set(spec.thresholds) == set(LABEL_KEYS)
    b = load_bundle(tmp_path, stages=fake_stages)
    assert b.vlm == "fake-vlm" and b.info["detector"]["kind"] == "detector"


def test_write_then_read_roundtrip(tmp_path):
    _parts(tmp_path / "b")
    elsewhere = tmp_path / "other_vlm"
    _parts(elsewhere, ())
    elsewhere.mkdir(exist_ok=True)
    write_bundle(tmp_path / "b", {"detector": tmp_path / "b/detector",
                                  "encoder": tmp_path / "b/encoder", "vlm": elsewhere},
                 {"lv_enlargement": 0.3}, 99, budget="tiny")
    data = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    assert data["components"]["detector"] == "detector"  # relative inside the bundle
    assert data["components"]["vlm"] == str(elsewhere.resolve())
    spec = read_bundle_spec(tmp_path / "b")
    assert spec.thresholds["lv_enlargement"] == 0.3 and spec.thresholds["healthy"] == 0.5
    assert spec.max_new_tokens == 99 and "view_classifier" not in spec.components


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ('{"format": "something-else"}', "not an EchoSonar model bundle"),
    ('{"format": "echosonar-bundle", "version": 99}', "newer than this echosonar"),
    ('{"format": "echosonar-bundle", "thresholds": {"lv_enlargement": 1.5}}', "in \\[0, 1\\]"),
    ('{"format": "echosonar-bundle", "thresholds": {"flu": 0.5}}', "unknown label"),
])
def test_malformed_bundle_json(tmp_path, content, match):
    _parts(tmp_path)
    (tmp_path / BUNDLE_FILE).write_text(content)
    with pytest.raises(BundleError, match=match):
        read_bundle_spec(tmp_path)


def test_missing_parts_and_overrides(tmp_path, fake_stages):
    with pytest.raises(BundleError, match="model bundle not found.*quickstart"):
        read_bundle_spec(tmp_path / "nope")
    _parts(tmp_path, ("detector", "encoder"))
    with pytest.raises(BundleError, match="missing component 'vlm'.*train sft.*--vlm DIR"):
        read_bundle_spec(tmp_path)
    _parts(tmp_path / "x", ("vlm",))
    spec = read_bundle_spec(tmp_path, {"vlm": tmp_path / "x" / "vlm"})
    assert spec.components["vlm"] == tmp_path / "x" / "vlm"
    with pytest.raises(BundleError, match="unknown bundle component"):
        read_bundle_spec(tmp_path, {"tokenizer": "x"})

    def boom(path):
        raise RuntimeError("weights truncated")

    fake_stages.load_encoder = boom
    with pytest.raises(BundleError, match="cannot load 'encoder'.*weights truncated"):
        load_bundle(tmp_path, {"vlm": tmp_path / "x" / "vlm"}, stages=fake_stages)
