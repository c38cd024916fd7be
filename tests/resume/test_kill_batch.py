"""``analyze --batch`` SIGKILLed at a seeded point and restarted: studies already written are
kept (not recomputed), the rest analysed, and the outputs equal an uninterrupted run's; no
half-written folder or file is left. Fake stages (tests/app/conftest.py), real batch code."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from echosonar.app.analyze_cli import batch_inputs, run_batch
from echosonar.app.pipeline import analyze_study
from echosonar.config import load_config

from .helpers import ENV, GUARD_S, kill_after, kill_point, temporaries

APP_TESTS = Path(__file__).resolve().parent.parent / "app"
VOLATILE = ("created_utc", "timing_s", "peak_memory_mb")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"app_{name}", APP_TESTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cmp_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if (a / name).is_dir():
            ra, rb = (json.loads((d / name / "result.json").read_text()) for d in (a, b))
            assert {k: v for k, v in ra.items() if k not in VOLATILE} == \
                {k: v for k, v in rb.items() if k not in VOLATILE}, name
            assert sorted(p.name for p in (a / name).iterdir()) == \
                sorted(p.name for p in (b / name).iterdir())
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        for r in s["rows"]:
            r.pop("seconds")
    assert sa == sb


@pytest.mark.parametrize("seed", [4])
def test_batch_sigkill_and_rerun_matches_uninterrupted(tmp_path, seed):
    child_mod = _load("batch_child")
    studies = child_mod.make_studies(tmp_path / "in")
    stages, bundle = child_mod.fakes()
    ref = tmp_path / "ref"
    run_batch(batch_inputs([studies]), bundle, load_config(), ref, True,
              analyze=lambda paths, b, cfg: analyze_study(paths, b, cfg, stages=stages))
    child = [sys.executable, str(APP_TESTS / "batch_child.py")]
    out = tmp_path / "out"
    at, delay = kill_point(seed, 1, 6, 0.05)
    kill_after(child + [str(out), str(studies)],
               lambda: len([p for p in out.glob("[0-9]*") if p.is_dir()]), at, delay)
    assert not (out / "summary.json").exists()
    p = subprocess.run(child + [str(out), str(studies)], env=ENV, capture_output=True,
                       text=True, timeout=GUARD_S)
    assert p.returncode == 1, p.stderr  # input 9 is junk, as in the reference
    assert "done earlier" in p.stderr  # kept, not recomputed
    assert "DOE" not in p.stderr
    _cmp_outputs(ref, out)
    assert temporaries(out) == []


