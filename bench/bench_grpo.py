"""GRPO benchmark: prefill-once rollouts vs ``generate(num_return_sequences=G)``, shared-prompt
training log-probs vs full sequences, and a GRPO step's time breakdown.

    nice python bench/bench_grpo.py [--threads 2] [--prompt 1024] [--new 256] [--group 8]
                                    [--reps 2] [--step-steps 2] [--out docs/bench/grpo.md]

1. Rollout tokens/s on the same model and prompt: a Llama decoder at the default ``LMConfig``
   (vocab 2048), one study with a ``--prompt``-token prompt given as ``inputs_embeds``, G =
   ``--group`` samples of exactly ``--new`` tokens (EOS disabled so both paths decode the same
   number of tokens). Ours: ``decode.sample_completions`` (prompt prefilled once, its keys and
   values read once per step for the group). Reference: HF ``generate(inputs_embeds=...,
   num_return_sequences=G, do_sample=True)`` (the prompt is expanded G times and prefilled G
   times). Runs are interleaved and the best of ``--reps`` is kept (the host is shared).
2. Training log-probs (forward + backward) of the G completions: prompt run once with its cache
   repeated (``share_prompt=True``, what the trainer does) vs the prompt concatenated to every
   completion.
3. The rewards on well-formed completions (embedding cache cold / warm).
5. (``--trl``, optional) a text-only GRPO step of TRL's ``GRPOTrainer`` vs this loop.
4. One GRPO step of the real ``EchoSonarR`` (default LMConfig, synthetic studies shaped like the
   feature cache: 1+8 clip tokens of width 128, 12 structure tokens of width 64) with the full
   reward set, mu = 2 and beta = 0.04 so every phase runs: rollout, reward, old log-probs,
   reference log-probs, policy update.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def default_lm(vocab: int = 2048):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from echosonar.config.reason import LMConfig

    c = LMConfig()
    inter = c.intermediate_size or -(-int(8 * c.hidden_size / 3) // 64) * 64
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=c.hidden_size, intermediate_size=inter,
                      num_hidden_layers=c.layers, num_attention_heads=c.heads,
                      num_key_value_heads=c.heads, max_position_embeddings=8192,
                      bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg).eval()
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = 0
    return lm


def bench_rollout(p: int, new: int, g: int, reps: int) -> dict:
    import torch

    from echosonar.reason.decode import sample_completions

    lm = default_lm()
    emb = torch.randn(1, p, lm.config.hidden_size) * 0.02
    mask = torch.ones(1, p, dtype=torch.long)
    ours, hf = [], []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            ids, _, _ = sample_completions(lm, emb, mask, num_samples=g, max_new_tokens=new,
                                           eos_token_id=None, pad_token_id=0)
            ours.append(time.perf_counter() - t0)
            assert ids.shape == (g, new)
            t0 = time.perf_counter()
            out = lm.generate(inputs_embeds=emb, attention_mask=mask, do_sample=True, top_k=0,
                              num_return_sequences=g, max_new_tokens=new, min_new_tokens=new,
                              eos_token_id=None, pad_token_id=0)
            hf.append(time.perf_counter() - t0)
            assert out.shape == (g, new), out.shape
    a, b = min(ours), min(hf)
    return {"prompt": p, "new": new, "G": g, "ours_s": a, "hf_s": b,
            "ours_tok_s": g * new / a, "hf_tok_s": g * new / b, "speedup": b / a}


def bench_logps(p: int, new: int, g: int, reps: int) -> dict:
    import torch

    from echosonar.reason.rollout import completion_logps

    lm = default_lm()
    emb = (torch.randn(1, p, lm.config.hidden_size) * 0.02).requires_grad_(True)
    mask = torch.ones(1, p, dtype=torch.long)
    ids = torch.randint(1, lm.config.vocab_size, (g, new))
    cmask = torch.ones_like(ids)
    res = {}
    for share in (True, False):
        best = float("inf")
        for _ in range(reps):
            lm.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            lp, _ = completion_logps(lm, emb, mask, ids, cmask, g, share_prompt=share)
            lp.sum().backward()
            best = min(best, time.perf_counter() - t0)
        res["shared_s" if share else "full_s"] = best
    res["speedup"] = res["full_s"] / res["shared_s"]
    return res


def bench_step(steps: int, new: int, g: int) -> dict:
    import tempfile

    import torch

    from echosonar.config.grpo import GRPOConfig
    from echosonar.config.reason import LMConfig
    from echosonar.reason.grpo import GRPOTrainer
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.synthetic import synthetic_studies
    from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

    studies = synthetic_studies(16, seed=0, d_enc=128, d_det=64, n_tokens=8)
    tok = train_tokenizer(corpus_from_studies(studies), vocab_size=2048)
    torch.manual_seed(0)
    model = build_model(LMConfig(max_len=4096), tok, feature_dims(studies[0]))
    plen = [len(x) for x in model.prompt_ids(studies)]
    cfg = GRPOConfig(steps=steps, group_size=g, studies_per_step=2, micro_batch_studies=2,
                     max_completion_length=new, num_iterations=2, beta=0.04, save_every=10**6,
                     device="cpu", lr=1e-5)
    with tempfile.TemporaryDirectory() as d:
        log = GRPOTrainer(model, cfg, studies, d).train()
    keys = ["rollout", "reward", "old_logp", "ref_logp", "update", "step"]
    last = log[-1]
    return {"prompt_tokens_mean": sum(plen) / len(plen), "steps": log,
            **{k: last[f"time/{k}"] for k in keys},
            "completion_length": last["completion_length"]}


def bench_rewards(g: int) -> dict:
    """All rewards on 2 studies x G well-formed completions (targets with swapped findings and
    report sections from other studies): MiniLM load, cold and warm embedding cache."""
    from echosonar.config.grpo import GRPOConfig
    from echosonar.reason.grpo_utils import study_columns
    from echosonar.reason.rewards import EMBEDDER, compute_rewards
    from echosonar.reason.synthetic import synthetic_studies
    from echosonar.textformat import target_text

    pool = synthetic_studies(2 + 2 * g, seed=1)
    studies, others = pool[:2], pool[2:]

    def completions(shift: int) -> list[str]:
        out = []
        for i, sf in enumerate(studies):
            for j in range(g):
                o = others[(i * g + j) % len(others)]
                # unique section texts per call: nothing is in the embedding cache yet
                rep = {k: f"{v} (draft {shift}.{i}.{j})" for k, v in o.report.items()}
                out.append(target_text(sf.reasoning, o.labels, rep))
        return out

    t0 = time.perf_counter()
    EMBEDDER._load()
    load = time.perf_counter() - t0
    cols = study_columns(studies, g)
    w = GRPOConfig().reward_weights
    res = {"load_s": load}
    for name, comps in (("cold_s", completions(0)), ("new_completions_s", completions(1)),
                        ("warm_s", completions(1))):  # cold: references not cached either
        t0 = time.perf_counter()
        compute_rewards(comps, w, "paper", **cols)
        res[name] = time.perf_counter() - t0
    return res


def _text_setup(p: int, seed: int = 0):
    """A text-only policy over the char tokenizer: the default-size Llama, a prompt of p chars."""
    import random
    import string

    import torch
    from torch import nn

    from echosonar.reason.grpo_toy import char_tokenizer

    tok = char_tokenizer()
    tok.padding_side = "left"
    lm = default_lm(vocab=len(tok))
    lm.config.eos_token_id = lm.generation_config.eos_token_id = tok.eos_token_id
    lm.config.pad_token_id = lm.generation_config.pad_token_id = tok.pad_token_id
    rnd = random.Random(seed)
    text = "".join(rnd.choice(string.ascii_lowercase + " ") for _ in range(p))

    class TextPolicy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokenizer, self.lm = tok, lm

        def prompt_embeds(self, batch):
            enc = tok([text] * len(batch), return_tensors="pt", add_special_tokens=False)
            return lm.get_input_embeddings()(enc["input_ids"]), enc["attention_mask"]

        def save_pretrained(self, d, meta=None):  # the bench keeps nothing
            return d

    torch.manual_seed(seed)
    return TextPolicy(), text


def bench_trl(p: int, new: int, g: int, steps: int) -> dict | None:
    """One text-only GRPO step, TRL's GRPOTrainer vs ours, same model/prompt/G/budget, beta 0,
    mu 1, dapo. None when trl is not installed (optional bench extra)."""
    import copy
    import tempfile

    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError:
        return None

    from echosonar.config.grpo import GRPOConfig
    from echosonar.reason.grpo import GRPOTrainer
    from echosonar.schema import StudyFeatures

    def digits(completions, **kw):
        return [sum(ch.isdigit() for ch in c[:8]) / 8 for c in completions]

    policy, text = _text_setup(p)
    lm0 = copy.deepcopy(policy.lm)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    lens: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        args = trl.GRPOConfig(
            output_dir=d, per_device_train_batch_size=g, num_generations=g,
            max_completion_length=new, max_steps=steps, learning_rate=1e-6, use_cpu=True,
            bf16=False, report_to="none", logging_steps=1, save_strategy="no", beta=0.0,
            loss_type="dapo", temperature=1.0, top_k=0, disable_dropout=True,
            dataloader_num_workers=0)
        tr = trl.GRPOTrainer(model=policy.lm, reward_funcs=[digits], args=args,
                             train_dataset=Dataset.from_dict({"prompt": [text] * (steps + 1)}),
                             processing_class=policy.tokenizer, callbacks=[Timer()])
        tr.train()
        lens = [h["completions/mean_length"] for h in tr.state.log_history
                if "completions/mean_length" in h]
    policy.lm = lm0
    cfg = GRPOConfig(steps=steps, group_size=g, studies_per_step=1, micro_batch_studies=1,
                     max_completion_length=new, lr=1e-6, reward_weights={"digits": 1.0},
                     reward_mode="sum", save_every=10**6, device="cpu", weight_decay=0.0)
    with tempfile.TemporaryDirectory() as d:
        log = GRPOTrainer(policy, cfg, [StudyFeatures(key="t", views=[])], d,
                          reward_funcs={"digits": digits}).train()
    ours = [m["time/step"] for m in log]
    return {"trl_version": trl.__version__, "trl_s": min(times[1:] or times),
            "ours_s": min(ours[1:] or ours), "trl_len": sum(lens) / max(len(lens), 1),
            "ours_len": sum(m["completion_length"] for m in log) / len(log),
            "prompt": p, "new": new, "G": g}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, nargs="+", default=[1024, 256])
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--step-steps", type=int, default=2, help="GRPO steps timed (0 = skip)")
    ap.add_argument("--step-new", type=int, default=128, help="completion budget in the step")
    ap.add_argument("--trl", action="store_true",
                    help="also time a text-only step of TRL's GRPOTrainer (needs `pip install trl`)")
    ap.add_argument("--trl-steps", type=int, default=3)
    ap.add_argument("--out", default="docs/bench/grpo.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for p in args.prompt:
        r = bench_rollout(p, args.new, args.group, args.reps)
        print(f"rollout P={p}: ours {r['ours_tok_s']:.0f} tok/s, HF generate "
              f"{r['hf_tok_s']:.0f} tok/s, x{r['speedup']:.2f}", flush=True)
        rows.append(r)
    lp = bench_logps(args.prompt[0], args.new, args.group, args.reps)
    print(f"log-probs fwd+bwd: shared {lp['shared_s']:.2f}s, full {lp['full_s']:.2f}s, "
          f"x{lp['speedup']:.2f}", flush=True)
    rw = bench_rewards(args.group)
    print(f"rewards: {rw}", flush=True)
    step = bench_step(args.step_steps, args.step_new, args.group) if args.step_steps else None
    if step:
        print({k: v for k, v in step.items() if k != "steps"}, flush=True)
    trl_res = bench_trl(args.prompt[0], args.new, args.group, args.trl_steps) if args.trl \
        else None
    if args.trl:
        print(f"trl: {trl_res}", flush=True)
    md = render(args, rows, lp, step, rw, trl_res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    print(f"wrote {args.out}")
    return 0


def render(args, rows, lp, step, rw, trl_res=None) -> str:
    import torch

    from echosonar.config.reason import LMConfig

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# GRPO benchmark", "",
        f"Command: `nice python bench/bench_grpo.py {' '.join(sys.argv[1:])}`  ",
        f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"(shared; 1-min load average at the end {load:.1f}), torch {torch.__version__}, "
        f"{args.threads} threads, fp32, CPU.", "",
        "## 1. Rollouts: prefill once, the prompt's cache shared by the group, vs "
        "`generate(num_return_sequences)`",
        "", "Llama decoder at the default LMConfig (hidden "
        f"{LMConfig().hidden_size}, {LMConfig().layers} layers, vocab 2048); one study; "
        f"G = {args.group} samples of exactly {args.new} new tokens; best of {args.reps} "
        "interleaved runs.", "",
        "| prompt tokens | ours (s) | HF generate (s) | ours tok/s | HF tok/s | speed-up |",
        "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['prompt']} | {r['ours_s']:.2f} | {r['hf_s']:.2f} | "
                     f"{r['ours_tok_s']:.0f} | {r['hf_tok_s']:.0f} | **{r['speedup']:.2f}x** |")
    lines += ["", "## 2. Training log-probs (forward + backward), same model", "",
              f"Prompt {args.prompt[0]} tokens, G = {args.group} completions of {args.new} "
              "tokens.", "",
              "| prompt once + cache repeated (s) | prompt concatenated G times (s) | speed-up |",
              "|---:|---:|---:|",
              f"| {lp['shared_s']:.2f} | {lp['full_s']:.2f} | **{lp['speedup']:.2f}x** |"]
    lines += ["", f"## 3. Rewards on 2 studies x G = {args.group} well-formed completions", "",
              "All seven weighted rewards (report similarity dominates: MiniLM on CPU). "
              "Cold = reference and generated sections embedded; new completions = references "
              "cached; warm = everything cached.", "",
              "| MiniLM load (once) | cold | new completions | warm |", "|---:|---:|---:|---:|",
              f"| {rw['load_s']:.2f} s | {rw['cold_s']:.2f} s | {rw['new_completions_s']:.2f} s "
              f"| {rw['warm_s']:.3f} s |"]
    if step:
        lines += ["", "## 4. One GRPO step of EchoSonar-R (default LMConfig)", "",
                  f"2 studies x G = {args.group}, completion budget {args.step_new} tokens, "
                  f"mu = 2, beta = 0.04, all rewards; mean prompt "
                  f"{step['prompt_tokens_mean']:.0f} tokens; an untrained model, so most "
                  f"completions run to the budget (mean length {step['completion_length']:.0f})."
                  " Times of the last timed step (the first also loads MiniLM). The reward "
                  "time is near zero here only because an untrained model's outputs do not "
                  "parse, so there are no report sections to embed (section 3 has the cost on "
                  "well-formed outputs).", "",
                  "| rollout | reward | old log-probs | ref log-probs | policy update (x2) | "
                  "step |", "|---:|---:|---:|---:|---:|---:|",
                  "| " + " | ".join(f"{step[k]:.2f} s" for k in
                                   ("rollout", "reward", "old_logp", "ref_logp", "update",
                                    "step")) + " |"]
    if args.trl:
        lines += ["", "## 5. A text-only GRPO step: TRL's GRPOTrainer vs EchoSonar's loop", ""]
        if trl_res is None:
            lines += ["trl is not installed (`pip install trl`, the optional `bench` extra)."]
        else:
            r = trl_res
            lines += [f"trl {r['trl_version']} (installed in a separate venv layered on the "
                      "project's, so the package never depends on it); the same default-size Llama over a character "
                      f"tokenizer, one prompt of {r['prompt']} tokens, G = {r['G']}, up to "
                      f"{r['new']} new tokens (EOS allowed, so lengths are random but drawn "
                      "from the same model), beta 0, mu 1, dapo, lr 1e-6; best step of "
                      f"{args.trl_steps} after the first.", "",
                      "| TRL step (s) | ours (s) | speed-up | mean completion length TRL / "
                      "ours |", "|---:|---:|---:|---:|",
                      f"| {r['trl_s']:.2f} | {r['ours_s']:.2f} | **{r['trl_s'] / r['ours_s']:.2f}"
                      f"x** | {r['trl_len']:.0f} / {r['ours_len']:.0f} |"]
    lines += ["", "Timings on a shared 2-core host move by 2x between runs; compare the two "
              "columns of one row (measured in the same process, interleaved), not absolute "
              "numbers across runs.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
