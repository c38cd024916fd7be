"""``analyze --batch``: one output folder per input (even for inputs holding the same study),
rows named by position, ``--out`` and numeric options checked before any work. (A batch killed
and restarted: tests/resume/test_kill_batch.py.)"""

from __future__ import annotations

import json
import re

import pytest

from echosonar.app.analyze_cli import run_batch
from echosonar.app.pipeline import analyze_study
from echosonar.cli import main
from echosonar.config import load_config

from .batch_child import make_studies


def _batch(out, studies, fake_bundle, fake_stages):
    from echosonar.app.analyze_cli import batch_inputs

    def analyze(paths, bundle, cfg):
        return analyze_study(paths, bundle, cfg, stages=fake_stages)

    return run_batch(batch_inputs([studies]), fake_bundle, load_config(), out, True,
                     analyze=analyze)


def test_inputs_sharing_a_study_key_keep_their_own_folders(tmp_path, fake_bundle, fake_stages):
    studies, out = make_studies(tmp_path / "in"), tmp_path / "out"
    assert _batch(out, studies, fake_bundle, fake_stages) == 1  # input 9 failed
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert [r["input"] for r in rows] == list(range(1, 10))
    assert summary["ok"] == 8 and rows[8]["status"] == "failed"
    folders = [r["folder"] for r in rows[:8]]
    assert len(set(folders)) == 8 and all(f.startswith(f"{i:04d}-") for i, f in
                                          enumerate(folders, 1))
    assert rows[1]["study_key"] == rows[6]["study_key"] == rows[7]["study_key"]
    assert rows[1]["same_study_as"] == [7, 8] and rows[6]["same_study_as"] == [2, 8]
    assert "same_study_as" not in rows[0]
    for r in rows[:8]:  # every input's result survived, none overwrote another
        res = json.loads((out / r["folder"] / "result.json").read_text())
        assert res["study_key"] == r["study_key"]
    md = (out / "summary.md").read_text()
    assert "same study as input 7, 8" in md
    for text in (md, (out / "summary.json").read_text()):
        assert "DOE" not in text and str(studies) not in text


@pytest.mark.parametrize("extra, message", [
    (["--max-new-tokens", "-1"], r"--max-new-tokens must be between 1 and 16384 \(got -1\)"),
    (["--max-new-tokens", "0"], r"--max-new-tokens must be between 1"),
    (["--max-new-tokens", "99999999"], r"--max-new-tokens must be between 1"),
    (["--threads", "0"], r"--threads must be between 1 and 256"),
    (["--set", "app.threads=-4"], r"app.threads must be between 1"),
    (["--set", "app.max_new_tokens=-1"], r"app.max_new_tokens must be between 1"),
    (["--set", "app.engine=fp16"], r"app.engine must be one of auto, int8, hf"),
])
def test_numeric_options_out_of_range_are_refused(tmp_path, study_dir, capsys, extra, message):
    rc = main(["analyze", str(study_dir), "--model", str(tmp_path / "no-bundle"), "--out",
               str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and re.search(message, err), err
    assert "bundle" not in err  # refused before the bundle is even looked at


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_that_cannot_be_a_folder_is_refused_up_front(tmp_path, study_dir, capsys, batch,
                                                         where):
    f = tmp_path / "taken.txt"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    rc = main(["analyze", str(study_dir), "--model", str(tmp_path / "no-bundle"), "--out",
               str(out), *(["--batch"] if batch else [])])
    err = capsys.readouterr().err
    assert rc == 2 and "--out:" in err and ("not a folder" in err), err
    assert "Traceback" not in err and f.read_text() == "x"
