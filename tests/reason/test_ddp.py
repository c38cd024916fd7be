"""`echosonar train sft` under torchrun with 2 CPU processes (gloo) == 1 process, same global
batch."""

import json
import os
import subprocess
import sys

import pytest
import torch

from echosonar.config import load_config
from echosonar.reason.model import EchoSonarR
from echosonar.reason.sft import train_sft
from echosonar.reason.synthetic import write_synthetic_cache
from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

SETS = ["lm.hidden_size=32", "lm.layers=1", "lm.heads=2", "lm.max_len=4096",
        "sft.batch_size=4", "sft.micro_batch_size=1", "sft.steps=3", "sft.warmup=1",
        "sft.log_every=1", "sft.eval_every=0", "sft.sample_every=0", "sft.save_every=0",
        "sft.threads=1", "sft.lr=3e-3"]


def _train_losses(run):
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]



def test_two_process_ddp_matches_single_process(tmp_path):
    studies = write_synthetic_cache(tmp_path / "feat", {"train": 8}, max_views=2, n_tokens=2)
    tok = train_tokenizer(corpus_from_studies(studies), vocab_size=600)
    tok.save_pretrained(str(tmp_path / "tok"))
    sets = SETS + [f"lm.tokenizer={tmp_path / 'tok'}"]
    single = train_sft(load_config(overrides=sets), tmp_path / "feat", tmp_path / "one")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "echosonar.cli", "train", "sft", "--features", str(tmp_path / "feat"),
           "--out", str(tmp_path / "two")]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "two" / "run_info.json").read_text())
    assert info["world_size"] == 2
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    assert one == pytest.approx(two, rel=1e-4)
    assert one[0] != pytest.approx(one[-1], rel=1e-3)  # it trained
    a = single["model"].state_dict()
    b = EchoSonarR.from_pretrained(tmp_path / "two" / "model").state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), k
