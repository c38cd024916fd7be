"""``simulate`` and ``ingest`` killed with SIGKILL mid-run (seeded point) and restarted write the
same files as an uninterrupted run (byte for byte; the cache's index in the same order), and
leave no half-written file behind."""

from __future__ import annotations

import json
from pathlib import Path

from .helpers import count, echosonar, kill_after, kill_point, run_ok, temporaries

SIM = ["--studies", "30", "--seed", "0", "--set", "sim.image_size=64", "--set", "sim.frames=8"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _shard(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.metadata(), {k: f.get_tensor(k).tobytes() for k in sorted(f.keys())}


def test_simulate_sigkill_and_rerun_matches_uninterrupted(tmp_path):
    run_ok(echosonar("simulate", *SIM, "--out", tmp_path / "ref"))
    run = tmp_path / "run"
    at, delay = kill_point(2, 2, 14, 0.02)
    kill_after(echosonar("simulate", *SIM, "--out", run),
               lambda: count(run / "studies", "[!.]*/study.json"), at, delay)
    assert count(run, "manifest.json") == 0  # really killed mid-run
    run_ok(echosonar("simulate", *SIM, "--out", run))
    assert _files(run) == _files(tmp_path / "ref")
    assert temporaries(run) == []


def test_ingest_sigkill_and_rerun_matches_uninterrupted(tmp_path):
    sim = tmp_path / "sim"
    run_ok(echosonar("simulate", *SIM, "--out", sim))
    args = ["ingest", sim, "--set", "ingest.clip_len=8"]
    run_ok(echosonar(*args, "--out", tmp_path / "ref"))
    run = tmp_path / "run"
    at, delay = kill_point(3, 2, 20, 0.02)
    kill_after(echosonar(*args, "--out", run), lambda: count(run / "studies", "[!.]*.safetensors"),
               at, delay)
    assert count(run, "ingest_summary.json") == 0
    out = run_ok(echosonar(*args, "--out", run)).stdout
    assert "(30 studies in cache)" in out
    ref, got = _files(tmp_path / "ref"), _files(run)
    summary = {k: json.loads(d.pop("ingest_summary.json")) for k, d in (("ref", ref),
                                                                          ("got", got))}
    assert got.keys() == ref.keys()
    assert got["index.json"] == ref["index.json"]  # same entries, same study order
    for name in ref:  # safetensors orders its header keys differently in every process
        if name.endswith(".safetensors"):
            assert _shard(run / name) == _shard(tmp_path / "ref" / name), name
    assert summary["got"]["cache_studies"] == summary["ref"]["cache_studies"] == 30
    assert temporaries(run) == []
