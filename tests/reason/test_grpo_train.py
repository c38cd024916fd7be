"""GRPO trainer: learns a toy reward, resumes exactly, handles zero-std groups, runs with the
real rewards, under DDP, and with the real EchoSonar-R through the CLI."""

import json

import pytest
import torch

from echosonar.config.grpo import GRPOConfig
from echosonar.reason.grpo import GRPOTrainer
from echosonar.reason.grpo_toy import ToyPolicy, toy_studies
from echosonar.reason.grpo_utils import check_config


def digits(completions, **kw):
    """Toy reward: fraction of the first 8 characters that are digits (about 0.1 at init)."""
    return [sum(ch.isdigit() for ch in c[:8]) / 8 for c in completions]


def toy_cfg(**kw):
    base = dict(lr=1e-2, steps=25, studies_per_step=4, micro_batch_studies=2, group_size=8,
                max_completion_length=8, reward_weights={"digits": 1.0}, reward_mode="sum",
                save_every=1000, device="cpu")
    base.update(kw)
    return GRPOConfig(**base)


def test_end_to_end_raises_mean_reward(tmp_path):
    log = GRPOTrainer(ToyPolicy(seed=0), toy_cfg(), toy_studies(8), tmp_path,
                      reward_funcs={"digits": digits}).train()
    first = sum(m["reward"] for m in log[:5]) / 5
    last = sum(m["reward"] for m in log[-5:]) / 5
    assert last > first + 0.3, (first, last)
    assert log[-1]["entropy"] < log[0]["entropy"]
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 25 and json.loads(lines[-1])["step"] == 25
    assert (tmp_path / "final" / "model.safetensors").is_file()


def _strip(log):
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in log]


def test_resume_is_exact(tmp_path):
    kw = dict(steps=4, save_every=2, beta=0.05, num_iterations=2, zero_std="resample",
              warmup=2, studies_per_step=2, group_size=4, max_completion_length=6)
    studies = toy_studies(6)
    a = GRPOTrainer(ToyPolicy(seed=0), toy_cfg(**kw), studies, tmp_path / "a",
                    reward_funcs={"digits": digits})
    log_a = a.train()
    # run b stops after step 2 (its checkpoint), then a fresh process resumes it to step 4
    GRPOTrainer(ToyPolicy(seed=0), toy_cfg(**{**kw, "steps": 2}), studies, tmp_path / "b",
                reward_funcs={"digits": digits}).train()
    b = GRPOTrainer(ToyPolicy(seed=0), toy_cfg(**kw), studies, tmp_path / "b",
                    reward_funcs={"digits": digits})
    log_b = b.train(resume=True)
    assert _strip(log_a) == _strip(log_b)
    for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters(),
                              strict=True):
        assert torch.equal(p, q), n
    # the KL reference stayed at the starting weights, not the resumed ones
    ref0 = ToyPolicy(seed=0).state_dict()
    for k, v in b.reference.state_dict().items():
        assert torch.equal(v, ref0[k]), k
    assert log_b[-1]["kl"] is not None and log_b[-1]["kl"] >= 0


def test_zero_std_groups_counted_dropped_and_resampled(tmp_path):
    const = {"c": lambda cs, **k: [1.0] * len(cs)}
    studies = toy_studies(4)
    for mode in ("keep", "drop", "resample"):
        pol = ToyPolicy(seed=0)
        before = [p.detach().clone() for p in pol.parameters()]
        tr = GRPOTrainer(pol, toy_cfg(steps=1, reward_weights={"c": 1.0}, zero_std=mode,
                                      group_size=2, studies_per_step=2), studies,
                         tmp_path / mode, reward_funcs=const)
        m = tr.train()[0]
        assert m["frac_zero_std"] == 1.0 and m["frac_zero_std_final"] == 1.0
        assert m["resampled"] == 0 and m["loss"] == 0.0
        # no signal -> no change (AdamW with zero gradient and no weight decay)
        for p, q in zip(before, pol.parameters(), strict=True):
            assert torch.equal(p, q)
    # a reward with signal for some studies only: resampling replaces the flat groups
    by_key = {"k": lambda cs, key, **k: [float(len(c) % 2) if key[i] in ("toy0000", "toy0001")
                                         else 0.0 for i, c in enumerate(cs)]}
    tr = GRPOTrainer(ToyPolicy(seed=0), toy_cfg(steps=1, reward_weights={"k": 1.0},
                                                zero_std="resample", resample_tries=4,
                                                studies_per_step=4), toy_studies(4),
                     tmp_path / "mixed", reward_funcs=by_key)
    m = tr.train()[0]
    assert m["frac_zero_std_final"] <= m["frac_zero_std"]


def test_real_rewards_and_logged_metrics(tmp_path):
    cfg = toy_cfg(steps=1, reward_weights=GRPOConfig().reward_weights, reward_mode="paper",
                  group_size=2, studies_per_step=2, max_completion_length=12, eval_every=1,
                  eval_studies=2)
    m = GRPOTrainer(ToyPolicy(seed=0), cfg, toy_studies(2), tmp_path,
                    val=toy_studies(2, seed=1)).train()[0]
    assert m["val/well_formed"] == 0.0 and "val/macro_bacc" in m
    assert json.loads((tmp_path / "eval_start.json").read_text())["val/n"] == 2
    for k in ("reward", "reward_std", "frac_zero_std", "clip_region", "entropy",
              "completion_length", "well_formed", "truncated", "time/rollout", "time/reward",
              "time/update", "rewards/format/mean", "rewards/report/std",
              "rewards/classification_balanced/mean", "rewards/length/mean"):
        assert k in m, k
    assert m["well_formed"] == 0.0 and m["rewards/format/mean"] == 0.0
    assert m["kl"] is None  # beta = 0 keeps no reference


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown reward"):
        GRPOTrainer(ToyPolicy(seed=0), toy_cfg(reward_weights={"nope": 1.0}), toy_studies(1),
                    tmp_path)
    for bad, msg in ((dict(loss_type="ppo"), "loss_type"), (dict(scale_rewards="x"), "scale"),
                     (dict(zero_std="skip"), "zero_std"), (dict(group_size=1), "group_size"),
                     (dict(studies_per_step=3), "divisible")):
        with pytest.raises(ValueError, match=msg):
            check_config(GRPOConfig(**bad), world=2)


def _ddp_rank(rank, world, port, out, policy, studies):
    """One DDP rank, forked from the test process with the env torchrun would set (forking skips
    re-importing torch/transformers; the same code under a real torchrun is in docs/notes)."""
    import os

    import torch.distributed as dist

    from echosonar.reason.sft import setup_distributed

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = 1
    try:
        torch.set_num_threads(1)
        rank, world, _ = setup_distributed("cpu")
        cfg = toy_cfg(steps=2, studies_per_step=2, micro_batch_studies=1, group_size=2,
                      max_completion_length=6, save_every=1, loss_type="grpo",
                      reward_weights={"len": 1.0})
        tr = GRPOTrainer(policy, cfg, studies, out, rank=rank, world=world,
                         reward_funcs={"len": lambda cs, **k: [float(len(c)) for c in cs]})
        log = tr.train()
        flat = torch.cat([p.detach().flatten() for p in tr.policy.parameters()])
        (out / f"rank{rank}.json").write_text(json.dumps({"params": flat.tolist(),
                                                          "reward": log[-1]["reward"]}))
        dist.destroy_process_group()
        code = 0
    finally:
        os._exit(code)  # skip the parent's atexit/pytest teardown in the forked child


def test_ddp_two_ranks_stay_in_sync(tmp_path):
    """Two gloo ranks with the real (tiny) EchoSonar-R, whose label head GRPO never uses."""
    import multiprocessing as mp
    import socket

    from echosonar.reason.synthetic import tiny_setup

    studies, _, model = tiny_setup(n=4, seed=0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_ddp_rank, args=(r, 2, port, tmp_path, model, studies))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["params"] == r1["params"]  # DDP kept the replicas identical
    assert r0["reward"] == r1["reward"]  # metrics are reduced over ranks
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "checkpoint" / "training_state.json").is_file()
    assert r0["params"] != torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()


def test_real_model_rollout_matches_its_generate_and_logprobs():
    from echosonar.reason.rollout import completion_logps, rollout
    from echosonar.reason.synthetic import tiny_setup

    # the generator's prefix-shared log-probs against the packed pass: a model without a copy
    # head (with one, GRPO scores the mixture: tests/reason/test_copy_head.py)
    studies, _, model = tiny_setup(n=3, seed=4, copy_head=False)
    model.eval()
    r = rollout(model, studies, num_samples=1, max_new_tokens=12, do_sample=False)
    _, ids, mask = model.generate(studies, max_new_tokens=12, return_ids=True)
    t = min(ids.shape[1], r.completion_ids.shape[1])
    assert torch.equal(r.completion_mask[:, :t], mask[:, :t])
    assert torch.equal(r.completion_ids[:, :t] * mask[:, :t], ids[:, :t] * mask[:, :t])
    g = rollout(model, studies, num_samples=3, max_new_tokens=10, temperature=0.9,
                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb, pm = model.prompt_embeds(studies)
        ours, _ = completion_logps(model.lm, emb, pm, g.completion_ids, g.completion_mask, 3, 0.9)
        theirs = model.completion_logprobs(studies, g.completion_ids, g.completion_mask, 0.9)
    m = g.completion_mask.bool()
    torch.testing.assert_close(ours[m], theirs[m], rtol=0, atol=1e-4)


def test_cli_train_resume_and_compare(tmp_path):
    from echosonar.cli import main
    from echosonar.reason.synthetic import tiny_setup, write_synthetic_cache

    write_synthetic_cache(tmp_path / "feat", {"train": 4, "val": 2, "test": 2}, seed=0)
    _, _, model = tiny_setup(n=4, seed=0)
    model.save_pretrained(tmp_path / "sft")
    common = ["train", "grpo", "--from", str(tmp_path / "sft"), "--features",
              str(tmp_path / "feat"), "--out", str(tmp_path / "run")]
    sets = ["--set", "grpo.group_size=2", "--set", "grpo.studies_per_step=2", "--set",
            "grpo.max_completion_length=12", "--set", "grpo.device=cpu", "--set",
            "grpo.threads=1", "--set", "grpo.save_every=1"]
    assert main(common + sets + ["--set", "grpo.steps=1"]) == 0
    assert main(common + sets + ["--set", "grpo.steps=1"]) == 2  # refuses to overwrite
    assert main(common + ["--resume", "--set", "grpo.steps=2", "--compare", "test"]) == 0
    run = tmp_path / "run"
    assert len((run / "log.jsonl").read_text().splitlines()) == 2
    assert {"config.yaml", "run_info.json", "checkpoint", "final", "compare_test.json"} <= \
        {p.name for p in run.iterdir()}
    cmp = json.loads((run / "compare_test.json").read_text())
    assert set(cmp) >= {"sft", "grpo", "delta_macro_bacc"}
    from echosonar.reason.model import EchoSonarR

    EchoSonarR.from_pretrained(run / "final")


def test_grpo_learns_an_answer_that_is_a_function_of_a_prompt_number(tmp_path):
    """The reward pays 'Y' first when the study's prompt number (its first view's first clip
    feature) is positive and 'N' when it is negative: a policy that ignores its prompt cannot
    beat 0.5 on average, so a rise well above it means GRPO read the number."""
    studies = toy_studies(16, seed=3)
    sign = {}
    for i, sf in enumerate(studies):
        x = 3.0 if i % 2 else -3.0
        sf.views[0].clip_tokens[0, 0] = x
        sign[sf.key] = x > 0

    def conditional(completions, key=None, **kw):
        want = ["Y" if sign[k] else "N" for k in key]
        return [1.0 if c[:1] == w else 0.0 if c[:1] in "YN" else -0.5
                for c, w in zip(completions, want, strict=True)]

    log = GRPOTrainer(ToyPolicy(seed=1), toy_cfg(steps=150, max_completion_length=1, lr=3e-3,
                                                 reward_weights={"cond": 1.0}),
                      studies, tmp_path, reward_funcs={"cond": conditional}).train()
    first = sum(m["reward"] for m in log[:5]) / 5
    last = sum(m["reward"] for m in log[-10:]) / 10
    assert last > 0.75 and last > first + 0.4, (first, last)
