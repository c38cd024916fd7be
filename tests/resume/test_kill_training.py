"""SFT and GRPO killed with SIGKILL mid-run (seeded point) and restarted reach the same weights
and the same loss/metric log as an uninterrupted run, with no half-written file left behind.

Tiny models (as in tests/reason/test_sft.py and test_grpo_train.py), each run a subprocess of
the real CLI: what a user's ``kill -9`` + ``--resume`` does.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from .helpers import echosonar, kill_after, kill_point, lines, run_ok, temporaries

SFT_SETS = ["lm.hidden_size=32", "lm.layers=1", "lm.heads=2", "lm.vocab_size=600",
            "lm.max_len=4096", "sft.batch_size=4", "sft.warmup=2", "sft.log_every=1",
            "sft.eval_every=3", "sft.sample_every=0", "sft.threads=1", "sft.max_new_tokens=8",
            "sft.samples=1", "sft.steps=24", "sft.save_every=4", "sft.micro_batch_size=2"]
GRPO_SETS = ["grpo.group_size=2", "grpo.studies_per_step=2", "grpo.max_completion_length=12",
             "grpo.device=cpu", "grpo.threads=1", "grpo.save_every=2", "grpo.steps=12",
             "grpo.num_iterations=2", "grpo.beta=0.05"]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def _records(path, kind=None):
    out = []
    for ln in path.read_text().splitlines():
        rec = json.loads(ln)  # a torn line would fail here: the log must be whole
        if kind is None or rec.get("kind") == kind:
            out.append(rec)
    return out


def _same_weights(a, b, atol: float) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=atol), k


@pytest.mark.parametrize("seed", [0])
def test_sft_sigkill_and_resume_matches_uninterrupted(tmp_path, seed):
    from echosonar.reason.synthetic import write_synthetic_cache

    write_synthetic_cache(tmp_path / "feat", {"train": 8, "val": 2})
    base = ["train", "sft", "--features", tmp_path / "feat", *_sets(SFT_SETS)]
    run_ok(echosonar(*base, "--out", tmp_path / "ref"))
    run = tmp_path / "run"
    at, delay = kill_point(seed, 2, 18, 0.05)
    kill_after(echosonar(*base, "--out", run),
               lambda: sum('"train"' in ln for ln in
                           (run / "log.jsonl").read_text().splitlines())
               if (run / "log.jsonl").is_file() else 0, at, delay)
    resume = ["--resume"] if (run / "checkpoint" / "training_state.json").is_file() else []
    run_ok(echosonar(*base, "--out", run, *resume))
    # same weights (micro-batch sums in another order: float noise only), same curve
    _same_weights(tmp_path / "ref" / "model", run / "model", atol=1e-6)
    ref, got = _records(tmp_path / "ref" / "log.jsonl"), _records(run / "log.jsonl")
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in ref]
    for x, y in zip(_records(tmp_path / "ref" / "log.jsonl", "train"),
                    _records(run / "log.jsonl", "train"), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7), x["step"]
    assert temporaries(run) == []


@pytest.mark.parametrize("seed", [1])
def test_grpo_sigkill_and_resume_matches_uninterrupted(tmp_path, seed):
    from echosonar.reason.synthetic import tiny_setup, write_synthetic_cache

    write_synthetic_cache(tmp_path / "feat", {"train": 4, "val": 2}, seed=0)
    _, _, model = tiny_setup(n=4, seed=0)
    model.save_pretrained(tmp_path / "sft")
    base = ["train", "grpo", "--from", tmp_path / "sft", "--features", tmp_path / "feat",
            *_sets(GRPO_SETS)]
    run_ok(echosonar(*base, "--out", tmp_path / "ref"))
    run = tmp_path / "run"
    at, delay = kill_point(seed, 1, 9, 0.1)
    kill_after(echosonar(*base, "--out", run), lambda: lines(run / "log.jsonl"), at, delay)
    resume = ["--resume"] if (run / "checkpoint" / "training_state.json").is_file() else []
    run_ok(echosonar(*base, "--out", run, *resume))
    _same_weights(tmp_path / "ref" / "final", run / "final", atol=0.0)

    def strip(recs):
        return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in recs]

    assert strip(_records(run / "log.jsonl")) == strip(_records(tmp_path / "ref" / "log.jsonl"))
    assert temporaries(run) == []
