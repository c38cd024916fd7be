"""Decoding speed of EchoSonar-R's loop vs transformers, side by side -> docs/bench/decode.md

    python bench/bench_decode.py [--threads 1 2] [--prompt 1550] [--new 300] [--rows 1 8]
        [--reps 5] [--group 8] [--grpo-prompt 1550] [--grpo-new 128] [--compile]
        [--out docs/bench/decode.md]

Model: a random Llama at the default ``LMConfig`` (hidden 192, 4 layers, 4 heads, SwiGLU 512,
vocab 2048: 2.2 M parameters; the brief's reference model is the same shape), fp32, CPU.
Greedy, EOS disabled so every path decodes exactly ``--new`` tokens after a ``--prompt``-token
prompt given as ``inputs_embeds``; ``--rows`` left-padded prompts decode together (row i is
8 i tokens shorter). Paths, interleaved rep by rep (the host is shared; medians):

(a) ``plain``: a transformers forward-with-cache loop (``DynamicCache``, ``input_ids`` per token);
(b) ``generate``: ``lm.generate(inputs_embeds=...)``;
(c) ``ours``: ``reason.decode.sample_completions`` (``LlamaStep``), and ``ours-hf``: the same
    loop over the model's own forward (``engine="hf"``, the non-Llama fallback);
    ``--compile`` adds ``ours-compiled`` (``torch.compile`` of the step, warmed up first);
(d) ``floor``: only the token's matrix products (q, k, v, o, gate, up, down, lm_head and the two
    attention products over the cached length) as separate calls.

Decode time per token excludes the prefill (timed on its own in every rep, the same HF forward
for every path). The greedy tokens of (a), (b) and (c) are checked to be identical. Then GRPO
rollouts: G = ``--group`` samples (top-p 1, temperature 1) of ``--grpo-new`` tokens from one
prompt given as token ids: ours (prefill once, the prompt's cache read once per step for the
group) vs ``generate(input_ids, num_return_sequences=G)``. Last, guided generation (what
``analyze`` runs) of an untrained default-size EchoSonar-R on a synthetic six-view study with a
``--guided-prompt``-token prompt: ours vs the model's own forward one token per step.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from echosonar.reason.decode import new_cache, prompt_positions, sample_completions  # noqa: E402
from echosonar.reason.llama_step import LlamaStep  # noqa: E402


def default_lm(vocab: int = 2048):
    from transformers import LlamaConfig, LlamaForCausalLM

    from echosonar.config.reason import LMConfig

    c = LMConfig()
    inter = c.intermediate_size or -(-int(8 * c.hidden_size / 3) // 64) * 64
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=c.hidden_size, intermediate_size=inter,
                      num_hidden_layers=c.layers, num_attention_heads=c.heads,
                      num_key_value_heads=c.kv_heads or c.heads, max_position_embeddings=8192,
                      tie_word_embeddings=c.tie_embeddings, bos_token_id=None,
                      eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    lm = LlamaForCausalLM(cfg).eval()
    lm.generation_config.eos_token_id = None
    lm.generation_config.pad_token_id = 0
    return lm


def prompts(lm, rows: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LEFT-padded random prompt embeddings ``[rows, p, H]`` and mask (row i 8 i shorter)."""
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(rows, p, lm.config.hidden_size, generator=g) * 0.02
    mask = torch.ones(rows, p, dtype=torch.long)
    for i in range(rows):
        mask[i, :8 * i] = 0
    return emb, mask


def prefill(lm, emb, mask):
    cache = new_cache()
    out = lm(inputs_embeds=emb, attention_mask=mask, position_ids=prompt_positions(mask),
             past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], cache


def plain_loop(lm, emb, mask, new):
    """(a) the textbook loop; returns (ids, decode seconds)."""
    logits, cache = prefill(lm, emb, mask)
    attn, pos = mask, mask.sum(-1, keepdim=True)
    t0 = time.perf_counter()
    out = []
    for t in range(new):
        tok = logits.argmax(-1)
        out.append(tok)
        if t == new - 1:
            break
        attn = torch.cat([attn, attn.new_ones(len(tok), 1)], 1)
        logits = lm(input_ids=tok[:, None], attention_mask=attn, position_ids=pos,
                    past_key_values=cache, use_cache=True).logits[:, -1]
        pos = pos + 1
    return torch.stack(out, 1), time.perf_counter() - t0


def matmul_floor(lm, rows: int, p: int, new: int) -> float:
    """(d) seconds for ``new`` tokens of matrix products only: every weight matrix once and
    the two attention products over each row's cached keys and values (separate tensors, as
    in a real cache: the floor reads what a step must read)."""
    m, h = lm.model, lm.config.hidden_size
    nh, hd = lm.config.num_attention_heads, h // lm.config.num_attention_heads
    names = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
             ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj")]
    ws = [[getattr(getattr(layer, a), b).weight for a, b in names] for layer in m.layers]
    down = [layer.mlp.down_proj.weight for layer in m.layers]
    head = lm.lm_head.weight
    k = torch.randn(len(ws), rows, nh, p + new, hd)
    v = torch.randn(len(ws), rows, nh, p + new, hd)
    x = torch.randn(rows, h)
    xi = torch.randn(rows, down[0].shape[1])
    t0 = time.perf_counter()
    for t in range(new):
        n = p + t + 1
        for i, w in enumerate(ws):
            for wi in w:
                F.linear(x, wi)
            F.linear(xi, down[i])
            s = torch.matmul(x.view(rows, nh, 1, hd), k[i, :, :, :n].transpose(-1, -2))
            torch.matmul(s, v[i, :, :, :n])
        F.linear(x, head)
    return time.perf_counter() - t0


def compiled_step(lm):
    """``LlamaStep`` with its step compiled by ``torch.compile`` (dynamic shapes: the cached
    length grows every token); the first call per process pays the compilation."""
    global _COMPILED
    if "_COMPILED" not in globals():
        _COMPILED = torch.compile(LlamaStep.__call__, dynamic=True)
    step = LlamaStep(lm)
    return type("Compiled", (), {"prefill": step.prefill,
                                 "__call__": lambda self, tok: _COMPILED(step, tok)})()


def bench_decode(lm, rows: int, p: int, new: int, reps: int, compiled) -> dict:
    emb, mask = prompts(lm, rows, p)
    paths = ["plain", "generate", "ours", "ours-hf", "floor"] + (["ours-compiled"] if compiled
                                                                  else [])
    times: dict[str, list[float]] = {k: [] for k in paths + ["prefill"]}
    ids: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if compiled:  # compile outside the timed reps
            t0 = time.perf_counter()
            sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=new,
                               eos_token_id=None, pad_token_id=0, do_sample=False,
                               engine=compiled_step)
            print(f"torch.compile warm-up: {time.perf_counter() - t0:.0f} s", flush=True)
        for _ in range(reps):
            t0 = time.perf_counter()
            prefill(lm, emb, mask)
            pre = time.perf_counter() - t0
            times["prefill"].append(pre)
            for k in paths:
                t0 = time.perf_counter()
                if k == "plain":
                    ids[k], dt = plain_loop(lm, emb, mask, new)
                elif k == "generate":
                    ids[k] = lm.generate(inputs_embeds=emb, attention_mask=mask, do_sample=False,
                                         max_new_tokens=new, min_new_tokens=new,
                                         eos_token_id=None, pad_token_id=0)
                    dt = time.perf_counter() - t0 - pre
                elif k == "floor":
                    dt = matmul_floor(lm, rows, p, new)
                else:
                    eng = {"ours": "lean", "ours-hf": "hf", "ours-compiled": compiled_step}[k]
                    ids[k], _, _ = sample_completions(
                        lm, emb, mask, num_samples=1, max_new_tokens=new, eos_token_id=None,
                        pad_token_id=0, do_sample=False, engine=eng)
                    dt = time.perf_counter() - t0 - pre
                times[k].append(dt)
    same = {k: bool(torch.equal(v, ids["plain"])) for k, v in ids.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rows": rows, "prompt": p, "new": new, "med": med, "same": same,
            "ms_tok": {k: 1e3 * med[k] / new for k in paths}}


def bench_grpo(lm, p: int, new: int, g: int, reps: int) -> dict:
    ids = torch.randint(1, lm.config.vocab_size, (1, p), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    ours, hf = [], []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            emb = lm.get_input_embeddings()(ids)
            out, _, _ = sample_completions(lm, emb, mask, num_samples=g, max_new_tokens=new,
                                           eos_token_id=None, pad_token_id=0)
            ours.append(time.perf_counter() - t0)
            assert out.shape == (g, new)
            t0 = time.perf_counter()
            out = lm.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0,
                              num_return_sequences=g, max_new_tokens=new, min_new_tokens=new,
                              eos_token_id=None, pad_token_id=0)
            hf.append(time.perf_counter() - t0)
            assert out.shape == (g, p + new)
    a, b = statistics.median(ours), statistics.median(hf)
    return {"prompt": p, "new": new, "G": g, "ours_s": a, "hf_s": b, "speedup": b / a}


def guided_setup(prompt: int):
    """An untrained EchoSonar-R at the default LMConfig and one synthetic six-view study whose
    prompt is about ``prompt`` tokens (clip tokens per view chosen to fit)."""
    from echosonar.config.reason import LMConfig
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.synthetic import synthetic_studies
    from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

    def study(n_tokens):
        return synthetic_studies(1, seed=3, d_enc=128, d_det=64, n_tokens=n_tokens,
                                 min_views=6, max_views=6)[0]

    tok = train_tokenizer(corpus_from_studies(synthetic_studies(64, seed=0)), vocab_size=2048)
    torch.manual_seed(0)
    model = build_model(LMConfig(max_len=4096), tok, feature_dims(study(1))).eval()
    base = len(model.prompt_ids([study(0)])[0])
    sf = study(max(0, round((prompt - base) / 6)))
    return model, sf, len(model.prompt_ids([sf])[0])


def bench_guided(prompt: int, budget: int, reps: int) -> dict:
    """Guided generation (what ``analyze`` runs) of the untrained model: this loop (forced runs
    in one step) vs the model's own forward, one token per step (the decoding before)."""
    from echosonar.reason.guided import guided_generate
    from echosonar.taxonomy import LABEL_KEYS

    model, sf, plen = guided_setup(prompt)
    thr = {k: 0.5 for k in LABEL_KEYS}
    paths = {"ours": ("auto", True), "hf-token-by-token": ("hf", False)}
    times: dict[str, list[float]] = {k: [] for k in paths}
    texts = {}
    with torch.no_grad():
        for _ in range(reps):
            for k, (engine, runs) in paths.items():
                t0 = time.perf_counter()
                texts[k] = guided_generate(model, [sf], thr, budget, engine, runs)[0][0]
                times[k].append(time.perf_counter() - t0)
    n_tok = len(model.tokenizer(texts["ours"], add_special_tokens=False)["input_ids"])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"prompt": plen, "tokens": n_tok, "same": texts["ours"] == texts["hf-token-by-token"],
            "med": med, "speedup": med["hf-token-by-token"] / med["ours"]}


def render(args, results, grpo, n_params, guided=()) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load = os.getloadavg()[0]
    lines = [
        "# Decoding speed (`bench/bench_decode.py`)", "",
        f"Command: `python bench/bench_decode.py {' '.join(sys.argv[1:])}`  ",
        f"Date {datetime.date.today()}, commit {commit}; host {platform.machine()}, "
        f"{os.cpu_count()} cores (shared: 1-min load average at the end {load:.1f}), torch "
        f"{torch.__version__}, fp32, CPU.  ",
        f"Model: random Llama at the default LMConfig ({n_params:.2f} M parameters: hidden 192, "
        "4 layers, 4 heads, vocab 2048); greedy, EOS disabled; decode time per token excludes "
        f"the prefill; medians of {args.reps} interleaved reps.", "",
        "| threads | rows | prompt | path | ms/token | tokens/s | x plain loop | "
        "x matmul floor | same tokens |", "|---|---|---|---|---:|---:|---:|---:|---|"]
    for thr, r in results:
        plain, floor = r["ms_tok"]["plain"], r["ms_tok"]["floor"]
        for k, ms in r["ms_tok"].items():
            same = "" if k == "floor" else ("yes" if r["same"].get(k) else "NO")
            lines.append(f"| {thr} | {r['rows']} | {r['prompt']} | {k} | {ms:.3f} | "
                         f"{1e3 * r['rows'] / ms:.0f} | {plain / ms:.2f} | {ms / floor:.2f} | "
                         f"{same} |")
    lines += ["", "`x plain loop` = the plain loop's time per token / this path's (higher is "
              "faster); `x matmul floor` = this path's time / the floor's (1 = nothing but the "
              "products). Prefill (same for all paths): " + ", ".join(
                  f"{r['med']['prefill']:.3f} s ({thr} thr, {r['rows']} rows)"
                  for thr, r in results) + ".", ""]
    if grpo:
        lines += ["## GRPO rollouts: G samples from one prompt (token ids)", "",
                  "| threads | prompt | new | G | ours (s) | generate(num_return_sequences) (s) "
                  "| speed-up |", "|---|---:|---:|---:|---:|---:|---:|"]
        for thr, r in grpo:
            lines.append(f"| {thr} | {r['prompt']} | {r['new']} | {r['G']} | {r['ours_s']:.2f} "
                         f"| {r['hf_s']:.2f} | **{r['speedup']:.2f}x** |")
        lines.append("")
    if guided:
        lines += ["## Guided generation of EchoSonar-R (what `analyze` runs)", "",
                  "An untrained EchoSonar-R at the default LMConfig, one synthetic six-view study "
                  "(prompt length below), thresholds 0.5, budget "
                  f"{args.guided_budget} tokens (a trained model's six-view analysis writes about "
                  "749). The untrained LM's free segments run to their caps, so fewer of its "
                  "tokens are forced than a trained model's: its time is an upper bound for the "
                  "trained one. `before` = the model's own forward, one token per step (the "
                  "decoding of earlier commits); `ours` = the Llama step, forced runs fed in one "
                  "step. Generation includes the prompt pass of the label head and the "
                  "prefill.", "",
                  "| threads | prompt | tokens | ours (s) | before (s) | ours ms/token | "
                  "speed-up | same text |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for thr, r in guided:
            lines.append(f"| {thr} | {r['prompt']} | {r['tokens']} | {r['med']['ours']:.2f} | "
                         f"{r['med']['hf-token-by-token']:.2f} | "
                         f"{1e3 * r['med']['ours'] / r['tokens']:.2f} | "
                         f"**{r['speedup']:.2f}x** | {'yes' if r['same'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompt", type=int, default=1550)
    ap.add_argument("--new", type=int, default=300)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--grpo-prompt", type=int, default=1550)
    ap.add_argument("--grpo-new", type=int, default=128)
    ap.add_argument("--grpo-reps", type=int, default=3)
    ap.add_argument("--guided-prompt", type=int, default=1550,
                    help="prompt tokens of the guided-generation section (0 = skip it)")
    ap.add_argument("--guided-budget", type=int, default=749,
                    help="tokens of the guided section (749: a trained six-view analysis)")
    ap.add_argument("--compile", action="store_true",
                    help="also time LlamaStep compiled with torch.compile")
    ap.add_argument("--out", default="docs/bench/decode.md")
    args = ap.parse_args(argv)

    lm = default_lm()
    n_params = sum(p.numel() for p in lm.parameters()) / 1e6
    results, grpo, guided = [], [], []
    for thr in args.threads:
        torch.set_num_threads(thr)
        for rows in args.rows:
            r = bench_decode(lm, rows, args.prompt, args.new, args.reps, args.compile)
            results.append((thr, r))
            print(thr, rows, {k: round(v, 3) for k, v in r["ms_tok"].items()}, r["same"],
                  flush=True)
        if args.group:
            grpo.append((thr, bench_grpo(lm, args.grpo_prompt, args.grpo_new, args.group,
                                         args.grpo_reps)))
            print(grpo[-1], flush=True)
        if args.guided_prompt:
            guided.append((thr, bench_guided(args.guided_prompt, args.guided_budget,
                                             args.grpo_reps)))
            print(guided[-1], flush=True)
    md = render(args, results, grpo, n_params, guided)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
