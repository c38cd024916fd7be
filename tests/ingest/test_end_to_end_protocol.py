"""The end-to-end protocol: a simulated set ingested blind (as a user's files would be) keeps
only the scoring truth from its manifest, and every cache records which protocol made it."""

from __future__ import annotations

import pytest

from echosonar.config.ingest import IngestConfig
from echosonar.ingest import ingest_manifest, write_cache
from echosonar.ingest.cache import CacheError, CacheWriter, read_index


def test_blind_ingest_keeps_only_the_scoring_truth(sim_set):
    cfg = IngestConfig(clip_len=8)
    oracle = ingest_manifest(sim_set, cfg)
    blind = ingest_manifest(sim_set, cfg, hints=False)
    assert [s.key for s in blind] == [s.key for s in oracle]
    for o, b in zip(oracle, blind, strict=True):
        # the truth evaluation scores against is still there
        assert (b.labels, b.report, b.split) == (o.labels, o.report, o.split)
        assert len(b.clips) == len(o.clips)
        assert all(c.view_conf == 1.0 and c.ed_index >= 0 and c.boxes for c in o.clips)
        # nothing the inference path would not have: view for the classifier, phases for the
        # detector, no ground-truth boxes
        for c in b.clips:
            assert c.view_conf == 0.0 and c.view == "OTHER"
            assert (c.ed_index, c.es_index, c.boxes) == (-1, -1, None)


def test_cache_records_its_protocol_and_refuses_to_mix(sim_set, tmp_path):
    studies = ingest_manifest(sim_set, IngestConfig(clip_len=8))
    write_cache(studies, tmp_path / "o", protocol="oracle")
    assert read_index(tmp_path / "o")["protocol"] == "oracle"
    with pytest.raises(CacheError, match="'oracle' cache"):
        CacheWriter(tmp_path / "o", protocol="end-to-end")


def test_cli_end_to_end_needs_a_view_model_and_a_manifest(sim_set, tmp_path, capsys):
    from echosonar.cli import main

    assert main(["ingest", str(sim_set), "--out", str(tmp_path / "c"), "--end-to-end"]) == 2
    assert "needs a view classifier" in capsys.readouterr().err
    some_file = next(p for p in sim_set.rglob("*.dcm"))
    assert main(["ingest", str(some_file), "--out", str(tmp_path / "d"), "--end-to-end"]) == 2
    assert "apply to a simulated set" in capsys.readouterr().err
    assert main(["ingest", str(sim_set), "--out", str(tmp_path / "e"), "--split", "test",
                 "--split", "val", "--split", "train"]) == 0
    assert read_index(tmp_path / "e")["protocol"] == "oracle"
