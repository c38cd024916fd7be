"""SFT: a tiny run learns; kill + resume continues the same loss curve; the CLI works."""

import json

import pytest
import torch

from echosonar.cli import main
from echosonar.config import load_config
from echosonar.reason.model import EchoSonarR
from echosonar.reason.sft import SFTError, lr_factor, train_sft
from echosonar.reason.synthetic import synthetic_studies, write_synthetic_cache

TINY = ["lm.hidden_size=32", "lm.layers=1", "lm.heads=2", "lm.vocab_size=600",
        "lm.max_len=4096", "sft.batch_size=4", "sft.warmup=2", "sft.log_every=1",
        "sft.eval_every=3", "sft.sample_every=0", "sft.threads=1", "sft.max_new_tokens=8",
        "sft.samples=1"]


@pytest.fixture(scope="module")
def data():
    return (synthetic_studies(16, seed=11, max_views=2, n_tokens=2),
            synthetic_studies(4, seed=12, split="val", max_views=2, n_tokens=2))


def _cfg(*extra):
    return load_config(overrides=TINY + list(extra))


def _losses(path):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "train"]


def test_lr_schedule():
    f = [lr_factor(i, 5, 50, 0.1) for i in range(50)]
    assert f[0] == pytest.approx(0.2) and f[4] == 1.0 and max(f) == 1.0
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False)) and f[-1] >= 0.1


def test_tiny_run_lowers_loss_and_changes_parameters(data, tmp_path):
    train, val = data
    cfg = _cfg("sft.steps=12", "sft.lr=1e-2", "sft.save_every=0", "sft.eval_every=0",
               "sft.sample_every=12")
    res = train_sft(cfg, None, tmp_path / "run", train=train[:4], val=val)
    h = res["history"]
    assert sum(r["loss"] for r in h[-3:]) / 3 < 0.8 * sum(r["loss"] for r in h[:3]) / 3
    model = res["model"]
    init = EchoSonarR.from_pretrained(tmp_path / "run" / "model")  # final == returned model
    fresh_cfg = load_config(overrides=TINY)
    assert fresh_cfg.lm.hidden_size == init.config.hidden_size
    for (n, p), (_, q) in zip(model.state_dict().items(), init.state_dict().items(),
                              strict=True):
        assert torch.equal(p, q), n
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims

    torch.manual_seed(0)
    fresh = build_model(fresh_cfg.lm, model.tokenizer, feature_dims(train[0]))
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters(),
                                           strict=True) if not torch.equal(p, q)]
    assert any("clip_proj" in n for n in changed) and any("layers.0" in n for n in changed)
    assert any("label_head" in n for n in changed)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in lines}
    assert kinds == {"train", "val", "samples", "head_fit"}
    # the label heads were refitted on the frozen LM before RUN/model was written
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["meta"]
    assert meta["head_fit"]["val_bce"] <= meta["head_fit"]["val_bce_start"]
    assert (tmp_path / "run" / "config.yaml").is_file()
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["seed"] == 0 and info["world_size"] == 1


def test_kill_and_resume_matches_uninterrupted(data, tmp_path):
    train, val = data
    cfg = _cfg("sft.steps=6", "sft.save_every=3", "sft.micro_batch_size=2")
    full = train_sft(cfg, None, tmp_path / "a", train=train, val=val)
    # "killed" after step 4: the checkpoint is at step 3, step 4's log line is stale
    train_sft(cfg, None, tmp_path / "b", train=train, val=val, stop_after=4)
    assert [r["step"] for r in _losses(tmp_path / "b" / "log.jsonl")] == [1, 2, 3, 4]
    with pytest.raises(SFTError, match="already holds a checkpoint"):
        train_sft(cfg, None, tmp_path / "b", train=train, val=val)
    resumed = train_sft(cfg, None, tmp_path / "b", resume=True, train=train, val=val)
    assert [r["step"] for r in resumed["history"]] == [4, 5, 6]
    a, b = _losses(tmp_path / "a" / "log.jsonl"), _losses(tmp_path / "b" / "log.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-6, abs=1e-7), x["step"]
        assert x["lr"] == pytest.approx(y["lr"], rel=1e-9)
    for (n, p), (_, q) in zip(full["model"].state_dict().items(),
                              resumed["model"].state_dict().items(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_cli_end_to_end(tmp_path, capsys):
    write_synthetic_cache(tmp_path / "feat", {"train": 8, "val": 2})
    args = ["train", "sft", "--features", str(tmp_path / "feat"), "--out", str(tmp_path / "r")]
    for s in TINY + ["sft.steps=2", "sft.save_every=1"]:
        args += ["--set", s]
    assert main(args) == 0
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "r" / "checkpoint" / "training_state.json").is_file()
    assert main(args[:-2] + ["--set", "sft.steps=3", "--resume"]) == 0
    assert [r["step"] for r in _losses(tmp_path / "r" / "log.jsonl")] == [1, 2, 3]
    assert main(["train", "sft", "--features", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "r2")]) == 2
    assert "no feature cache index" in capsys.readouterr().err
    assert main(["train", "sft", "--features", str(tmp_path / "feat"), "--out",
                 str(tmp_path / "r3"), "--resume"]) == 2


def test_balanced_sampling_is_resumable_and_prefers_rare_findings():
    import numpy as np

    from echosonar.reason.data import batch_indices, study_weights
    from echosonar.taxonomy import LABEL_KEYS

    class S:  # only labels matter to the sampler
        def __init__(self, **pos):
            self.labels = {k: pos.get(k, 0) for k in LABEL_KEYS}

    studies = [S(healthy=1) for _ in range(18)] + [S(pericardial_effusion=1, healthy=0)] * 2
    w = study_weights(studies, 1.0)
    assert w.sum() == pytest.approx(1.0) and w[-1] == pytest.approx(9 * w[0])
    assert np.allclose(study_weights(studies, 0.0), 1 / 20)
    draws = [i for s in range(50) for i in batch_indices(20, 8, s, 3, weights=w)]
    rare = sum(i >= 18 for i in draws) / len(draws)
    assert 0.35 < rare < 0.65  # half the draws, against 10 % uniformly
    # a pure function of (seed, step): a resumed run and 2 DDP ranks see the same batches
    full = batch_indices(20, 8, 7, 3, weights=w)
    assert full == batch_indices(20, 8, 7, 3, weights=w.copy())
    assert full == batch_indices(20, 8, 7, 3, 0, 2, w) + batch_indices(20, 8, 7, 3, 1, 2, w)
    with pytest.raises(ValueError, match="weights"):
        batch_indices(20, 8, 0, 3, weights=np.zeros(20))


def test_balanced_weighted_run_trains_and_rejects_bad_settings(data, tmp_path):
    train, val = data
    cfg = _cfg("sft.steps=4", "sft.save_every=0", "sft.eval_every=0", "sft.balance=1.0",
               "sft.finding_weight=3.0")
    res = train_sft(cfg, None, tmp_path / "run", train=train, val=val)
    assert len(res["history"]) == 4 and all(r["lm_loss"] > 0 for r in res["history"])
    with pytest.raises(SFTError, match="finding_weight"):
        train_sft(_cfg("sft.finding_weight=0"), None, tmp_path / "bad", train=train, val=val)
    assert not (tmp_path / "bad").exists()


def test_init_from_starts_a_new_phase_from_trained_weights(data, tmp_path):
    train, val = data
    first = train_sft(_cfg("sft.steps=10", "sft.lr=1e-2", "sft.save_every=0",
                           "sft.eval_every=0"), None, tmp_path / "p1", train=train[:4], val=val)
    cfg = _cfg("sft.steps=2", "sft.lr=1e-4", "sft.save_every=0", "sft.eval_every=0")
    fresh = train_sft(cfg, None, tmp_path / "fresh", train=train[:4], val=val)
    second = train_sft(cfg, None, tmp_path / "p2", train=train[:4], val=val,
                       init_from=first["model_dir"])
    # same batch at step 1: the phase-2 model starts where phase 1 ended, not from scratch
    assert second["history"][0]["lm_loss"] < 0.8 * fresh["history"][0]["lm_loss"]
    info = json.loads((tmp_path / "p2" / "run_info.json").read_text())
    assert info["init_from"] == str(first["model_dir"])
    with pytest.raises(SFTError, match="choose one"):
        train_sft(cfg, None, tmp_path / "p2", train=train[:4], val=val, resume=True,
                  init_from=first["model_dir"])


def test_bf16_precision_learns_like_fp32_and_rejects_bad_values(data, tmp_path):
    """sft.precision=bf16 (CPU autocast): the same run's losses stay close to fp32's and
    both fall; the products really ran in bfloat16 (the losses differ); a bad value fails
    before any work."""
    train, val = data
    runs = {}
    for prec in ("fp32", "bf16"):
        cfg = _cfg("sft.steps=10", "sft.lr=1e-2", "sft.save_every=0", "sft.eval_every=0",
                   "sft.refit_heads=false", f"sft.precision={prec}")
        runs[prec] = [r["loss"] for r in
                      train_sft(cfg, None, tmp_path / prec, train=train[:4], val=val)["history"]]
    for losses in runs.values():
        assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
    assert runs["fp32"] != runs["bf16"]
    assert runs["bf16"][0] == pytest.approx(runs["fp32"][0], rel=0.02)
    assert runs["bf16"][-1] == pytest.approx(runs["fp32"][-1], rel=0.1)
    with pytest.raises(SFTError, match="precision"):
        train_sft(_cfg("sft.precision=fp16"), None, tmp_path / "bad", train=train, val=val)
    assert not (tmp_path / "bad").exists()


def test_a_failing_sample_is_logged_and_the_trained_model_is_kept(data, tmp_path, monkeypatch):
    """Samples are diagnostics: a decoding failure at the last step must not lose the run
    (the checkpoint and the final model are written, the error is in the log)."""
    import echosonar.reason.sft as sft

    def boom(*a, **k):
        raise ImportError("decode step unavailable")

    monkeypatch.setattr(sft, "sample_record", boom)
    train, val = data
    cfg = _cfg("sft.steps=3", "sft.save_every=0", "sft.eval_every=0", "sft.sample_every=0")
    res = train_sft(cfg, None, tmp_path / "run", train=train[:4], val=val)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "checkpoint" / "config.json").is_file()
    assert res["model_dir"] is not None
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    err = [r for r in log if r["kind"] == "sample_error"]
    assert len(err) == 1 and "decode step unavailable" in err[0]["error"]
