"""`echosonar train sft` as 2 DDP CPU processes (gloo) == 1 process with the same global batch.

The two ranks are forked from the test process with the env torchrun would set (RANK,
WORLD_SIZE, MASTER_ADDR/PORT, LOCAL_RANK) and run the CLI entry point; forking skips re-importing
torch/transformers, which costs more than the training itself on 2 cores. The same command
under a real ``torchrun --nproc_per_node=2`` is in docs/notes/reason.md.
"""

import json
import multiprocessing as mp
import os
import socket

import pytest
import torch

from echosonar.cli import main
from echosonar.config import load_config
from echosonar.reason.model import EchoSonarR
from echosonar.reason.sft import train_sft
from echosonar.reason.synthetic import write_synthetic_cache
from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

SETS = ["lm.hidden_size=32", "lm.layers=1", "lm.heads=2", "lm.max_len=4096",
        "sft.batch_size=4", "sft.micro_batch_size=1", "sft.steps=3", "sft.warmup=1",
        "sft.log_every=1", "sft.eval_every=0", "sft.sample_every=0", "sft.save_every=0",
        "sft.threads=1", "sft.lr=3e-3"]


def _rank_main(rank, world, port, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    code = main(args)
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    os._exit(code)  # skip the parent's atexit/pytest teardown in the forked child


def _train_losses(run):
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]



def test_two_process_ddp_matches_single_process(tmp_path):
    studies = write_synthetic_cache(tmp_path / "feat", {"train": 8}, max_views=2, n_tokens=2)
    tok = train_tokenizer(corpus_from_studies(studies), vocab_size=600)
    tok.save_pretrained(str(tmp_path / "tok"))
    sets = SETS + [f"lm.tokenizer={tmp_path / 'tok'}"]
    single = train_sft(load_config(overrides=sets), tmp_path / "feat", tmp_path / "one")
    args = ["train", "sft", "--features", str(tmp_path / "feat"), "--out", str(tmp_path / "two")]
    for s in sets:
        args += ["--set", s]
    with socket.socket() as sock:  # a free port for the gloo rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=150)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert codes == [0, 0], codes
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
