"""The one decoding loop of EchoSonar-R: evaluation, ``analyze`` and GRPO rollouts all call
:func:`sample_completions`.

Why a hand-written step. At the default size (hidden 192, 4 layers, ~1,550 cached positions) a
token's matrix products take a fraction of a millisecond on a CPU core, while a transformers
forward with a cache takes 3-4 ms: about sixty Python-level module calls, mask building and
cache bookkeeping per token. :class:`LlamaStep` reads the weights of a Llama-shaped HF model
(Llama, Qwen2; LoRA adapters included) once per call and then runs one token for every row as a
dozen tensor ops per layer over a static KV cache:

* q, k and v are one matrix, gate and up another; RMSNorm weights are folded into the matrix
  that follows them; the residual adds ride on ``addmm``;
* the prompt is prefilled once per study by the HF model (also for the G samples of a GRPO
  group) and its keys/values are read once per step for the whole group: a decoding step is
  memory-bound here (the cache of a 1,550-token prompt is 9.5 MB, the weights 8.6 MB), so G
  copies of the prompt's cache would cost G times the traffic;
* the tokens decoded since go to a preallocated static cache, written in place; left padding is
  an additive mask over the prompt's slots.

Anything else (another architecture behind LoRA, sliding windows, position-dependent RoPE
scaling) decodes through :class:`HFStep`, the model's own forward with a cache, behind the same
two calls (``prefill``, then one call per token). ``engine="hf"`` forces it.

Completion masks come from the FIRST EOS (EOS included), never from pad equality: many
tokenizers use ``pad == eos``, and a completion may legitimately contain the pad id.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------
# HF plumbing (also used by the GRPO log-prob pass in reason.rollout)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _cache_kw_for(cls: type) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both.
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _base_lm(lm: nn.Module) -> nn.Module:
    """Unwrap PEFT / DDP wrappers to the HF model (for signatures, embeddings and weights)."""
    for _ in range(8):
        if isinstance(lm, nn.parallel.DistributedDataParallel):
            inner = lm.module
        elif hasattr(lm, "get_base_model"):
            inner = lm.get_base_model()
        else:
            return lm
        if inner is lm:
            return lm
        lm = inner
    return lm


def lm_forward(lm: nn.Module, cache: Any = None, **kwargs: Any) -> Any:
    """Call a HF causal LM with a KV cache under whichever keyword its version uses."""
    if cache is not None:
        kwargs[_cache_kw_for(type(_base_lm(lm)))] = cache
    return lm(**kwargs)


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def repeat_cache(cache: Any, repeats: int) -> Any:
    """Repeat every layer's keys/values ``repeats`` times along the batch (interleaved: row
    ``b`` becomes rows ``b*G .. b*G+G-1``). Differentiable."""
    if repeats == 1:
        return cache
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(repeats)
        return cache
    for layer in cache.layers:  # pragma: no cover - older cache layouts
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)
    return cache


def preallocate_cache(cache: Any, extra: int) -> Any:
    """Give every layer of a filled ``DynamicCache`` room for ``extra`` more positions, written
    in place, so decoding stops re-copying the whole cache (``torch.cat``) at every token.
    Only for no-grad decoding; layers that are not plain full-attention layers are left as
    they are."""
    for layer in getattr(cache, "layers", []):
        k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (torch.is_tensor(k) and torch.is_tensor(v)) or getattr(layer, "is_sliding", False):
            continue
        n = k.shape[-2]
        kb = k.new_empty(*k.shape[:-2], n + extra, k.shape[-1])
        vb = v.new_empty(*v.shape[:-2], n + extra, v.shape[-1])
        kb[..., :n, :], vb[..., :n, :] = k, v
        state = {"k": kb, "v": vb, "n": n}

        def update(key_states: Tensor, value_states: Tensor, *args: Any, _s: dict = state,
                   _layer: Any = layer, **kwargs: Any) -> tuple[Tensor, Tensor]:
            n, t = _s["n"], key_states.shape[-2]
            if n + t > _s["k"].shape[-2]:
                raise RuntimeError("preallocated KV cache is full")
            _s["k"][..., n:n + t, :] = key_states
            _s["v"][..., n:n + t, :] = value_states
            _s["n"] = n + t
            _layer.keys, _layer.values = _s["k"][..., :n + t, :], _s["v"][..., :n + t, :]
            return _layer.keys, _layer.values

        layer.keys, layer.values = kb[..., :n, :], vb[..., :n, :]
        layer.update = update  # instance attribute: the cache calls layer.update(...)
    return cache


def prompt_positions(mask: Tensor) -> Tensor:
    """Position ids for a LEFT-padded mask ``[B, P]`` (as HF generate builds them: real tokens
    count from 0, pads get 1 — they are masked anyway).

    >>> prompt_positions(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])).tolist()
    [[1, 1, 0, 1], [0, 1, 2, 3]]
    """
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def completion_mask_from_eos(ids: Tensor, eos_token_id: int | None) -> Tensor:
    """1 for every token up to and including the FIRST ``eos_token_id``; all ones without EOS.

    >>> completion_mask_from_eos(torch.tensor([[5, 2, 2, 7], [5, 6, 7, 8], [2, 0, 0, 0]]), 2)
    tensor([[1, 1, 0, 0],
            [1, 1, 1, 1],
            [1, 0, 0, 0]])
    """
    n, t = ids.shape
    if eos_token_id is None:
        return torch.ones_like(ids)
    is_eos = ids == eos_token_id
    first = torch.full((n,), t, dtype=torch.long, device=ids.device)
    has = is_eos.any(-1)
    first[has] = is_eos.int().argmax(-1)[has]
    return (torch.arange(t, device=ids.device)[None, :] <= first[:, None]).long()


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability mass reaches ``top_p`` (at least one);
    the rest get ``-inf``. Same rule as HF's ``TopPLogitsWarper``."""
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove = cum <= (1 - top_p)
    remove[..., -1] = False
    mask = remove.scatter(-1, sorted_idx, remove)
    return logits.masked_fill(mask, float("-inf"))


def next_tokens(logits: Tensor, do_sample: bool, temperature: float, top_p: float,
                generator: torch.Generator | None) -> Tensor:
    """Pick one token per row from raw logits ``[N, V]`` -> long ``[N]`` (HF's order of
    operations: temperature, top-p, one ``multinomial`` draw per row)."""
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    scores = top_p_filter(logits.float() / temperature, top_p)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Decode steps: prefill(embeds, mask, G, T) -> first logits; step(tokens [N]) -> logits [N, V]
# ---------------------------------------------------------------------------------------------


class HFStep:
    """The model's own forward with a KV cache (prompt prefilled once, repeated G times, then
    grown in place). Works for any HF causal LM; the reference the fast step is tested
    against."""

    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm

    def prefill(self, embeds: Tensor, mask: Tensor, g: int, budget: int) -> Tensor:
        self.cache = new_cache()
        out = lm_forward(self.lm, cache=self.cache, inputs_embeds=embeds, attention_mask=mask,
                         position_ids=prompt_positions(mask), use_cache=True, logits_to_keep=1)
        repeat_cache(self.cache, g)
        preallocate_cache(self.cache, budget)
        self.attn = mask.repeat_interleave(g, 0)
        self.pos = mask.long().sum(-1, keepdim=True).repeat_interleave(g, 0)  # last pos + 1
        return out.logits[:, -1, :].repeat_interleave(g, 0)

    def __call__(self, tok: Tensor) -> Tensor:
        """``tok [N, k]`` (k >= 1 tokens per row) -> logits after the last one ``[N, V]``."""
        n, k = tok.shape
        self.attn = torch.cat([self.attn, self.attn.new_ones(n, k)], dim=1)
        pos = self.pos + torch.arange(k, device=tok.device)
        out = lm_forward(self.lm, cache=self.cache, input_ids=tok, attention_mask=self.attn,
                         position_ids=pos, use_cache=True, logits_to_keep=1)
        self.pos = self.pos + k
        return out.logits[:, -1, :]


def _affine(mod: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(weight [out, in], bias [out] or None)`` of a linear map. A plain ``nn.Linear`` gives
    its parameters; anything else (a LoRA-wrapped linear, PEFT trainable tokens) is read by
    probing it with the identity, which is exact for every affine module and costs one
    ``in x in x out`` product per call."""
    if type(mod) is nn.Linear:
        return mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
    w = mod.weight  # [out, in]: wrappers forward .weight (PEFT: the base's or the merged one)
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    b = mod(torch.zeros_like(eye[:1]))
    return (mod(eye) - b).t(), (b[0] if bool(b.any()) else None)


def _table(mod: nn.Module) -> Tensor:
    """The embedding table ``[V, H]`` (also of a wrapped embedding, e.g. PEFT trainable
    tokens: read by looking every id up)."""
    if type(mod) is nn.Embedding:
        return mod.weight.detach()
    w = mod.weight
    return mod(torch.arange(w.shape[0], device=w.device))


#: architectures whose decoder layer is exactly Llama's (pre-RMSNorm, rotary, GQA, SwiGLU)
LLAMA_SHAPED = ("llama", "qwen2")
#: RoPE variants whose cos/sin depend on the position only (dynamic scaling depends on length)
STATIC_ROPE = ("default", "linear", "llama3", None)


def llama_shaped(lm: nn.Module) -> bool:
    """True when :class:`LlamaStep` reproduces ``lm``'s forward."""
    base = _base_lm(lm)
    cfg = getattr(base, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in LLAMA_SHAPED:
        return False
    rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    layers = getattr(getattr(base, "model", None), "layers", None)
    return (getattr(cfg, "hidden_act", "silu") == "silu" and layers is not None
            and not getattr(cfg, "use_sliding_window", False)
            and rope.get("rope_type", rope.get("type")) in STATIC_ROPE
            and all(hasattr(layer.self_attn, "q_proj") and hasattr(layer.mlp, "gate_proj")
                    for layer in layers))


class LlamaStep:
    """One token for every row of a Llama-shaped HF model, over its own weights (read at
    construction: build one per decoding call, the weights may have been trained since).

    Rows are ``N = B * G``: B prompts, G samples each (row ``b * G + j``). The prompt's keys and
    values stay where the HF prefill left them (``[B, kv_heads, P, hd]`` per layer) and each
    study's G rows read them once, as ``G * r`` queries of one matrix product (r = q-heads per
    kv-head); the tokens decoded since go to a static cache ``[layers, B, kv_heads, G, T, hd]``
    of their own. One softmax spans both parts.

    ``int8``: the matrices (not the cache, norms or embeddings) are quantized per output channel
    (``torch.ao.quantization.quantize_dynamic``); activations are quantized per step. A quarter of
    the weight traffic, at int8 precision: greedy outputs may differ from the fp32 model's.
    """

    def __init__(self, lm: nn.Module, int8: bool = False) -> None:
        self.lm = lm
        base = _base_lm(lm)
        cfg, dec = base.config, base.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        attn0 = dec.layers[0].self_attn
        self.hd = getattr(attn0, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale = self.hd ** -0.5
        self.eps = dec.layers[0].input_layernorm.variance_epsilon
        self.rotary = dec.rotary_emb
        mats: list[tuple[Tensor, Tensor | None]] = []  # [out, in] + bias, in layer order
        for layer in dec.layers:
            a, m = layer.self_attn, layer.mlp
            (wq, bq), (wk, bk), (wv, bv) = _affine(a.q_proj), _affine(a.k_proj), _affine(a.v_proj)
            (wg, bg), (wu, bu) = _affine(m.gate_proj), _affine(m.up_proj)
            # attention's 1/sqrt(hd) rides on q's rows (rotary is linear, so it commutes)
            wq, bq = wq * self.scale, None if bq is None else bq * self.scale
            mats += [  # RMSNorm's weight scales the input columns of the matrix after it
                (torch.cat([wq, wk, wv]) * layer.input_layernorm.weight,
                 _cat_bias((bq, wq), (bk, wk), (bv, wv))),
                _affine(a.o_proj),
                (torch.cat([wg, wu]) * layer.post_attention_layernorm.weight,
                 _cat_bias((bg, wg), (bu, wu))),
                _affine(m.down_proj)]
        head_w, head_b = _affine(base.get_output_embeddings())
        mats.append((head_w * dec.norm.weight, head_b))
        proj = _int8(mats) if int8 else [(w.t().contiguous(), b) for w, b in mats]
        self.layers = [proj[i:i + 4] for i in range(0, len(proj) - 1, 4)]
        self.head = proj[-1]
        self.inter = mats[2][0].shape[0] // 2
        self.emb = _table(base.get_input_embeddings())

    def prefill(self, embeds: Tensor, mask: Tensor, g: int, budget: int) -> Tensor:
        """HF prefill of the B prompts; returns the first logits ``[B * G, V]``."""
        cache = new_cache()
        out = lm_forward(self.lm, cache=cache, inputs_embeds=embeds, attention_mask=mask,
                         position_ids=prompt_positions(mask), use_cache=True, logits_to_keep=1)
        b, p = mask.shape
        self.b, self.g, self.p, self.t = b, g, p, 0
        self.kp = [layer.keys for layer in cache.layers]
        self.vp = [layer.values for layer in cache.layers]
        k0 = self.kp[0]
        self.k = k0.new_empty(len(self.layers), b, self.kv_heads, g, budget, self.hd)
        self.v = torch.empty_like(self.k)
        # pads of the left-padded prompt are never attended (no pads: nothing to add)
        self.bias = None if bool(mask.all()) else torch.zeros(
            b, 1, 1, 1, p, dtype=k0.dtype, device=k0.device).masked_fill_(
            mask[:, None, None, None, :] == 0, float("-inf"))
        # rotary tables per (step, row): the token fed at step t sits at position len_i + t;
        # rotate_half(x) * sin == roll(x, hd/2) * [-sin1, sin2] (one roll instead of a cat)
        start = mask.long().sum(-1).repeat_interleave(g, 0)
        pos = start[None, :] + torch.arange(budget, device=mask.device)[:, None]  # [T, N]
        cos, sin = self.rotary(k0, pos)  # [T, N, hd]
        half = self.hd // 2
        sin = torch.cat([-sin[..., :half], sin[..., half:]], -1)
        self.cos, self.sin = cos[:, :, None, :], sin[:, :, None, :]
        return out.logits[:, -1, :].repeat_interleave(g, 0)

    def __call__(self, tok: Tensor) -> Tensor:
        """``tok [N, k]`` (k >= 1 tokens per row: k > 1 feeds a forced run in one step) ->
        logits after the last one ``[N, V]``."""
        (n, kk), t, b, g, p, hd = tok.shape, self.t, self.b, self.g, self.p, self.hd
        nq, nk = self.heads, self.kv_heads
        r = nq // nk  # q-heads per kv-head
        cos, sin = self.cos[t:t + kk].transpose(0, 1), self.sin[t:t + kk].transpose(0, 1)
        # a study's queries (its G rows x k tokens x r heads) against each kv-head, in a row
        m = g * kk * r
        causal = self._causal(kk, r, t) if kk > 1 else None
        x = F.embedding(tok.reshape(-1), self.emb)  # [N * k, H]
        for i, (qkv, o_proj, gate_up, down) in enumerate(self.layers):
            y = _mm(F.rms_norm(x, (x.shape[-1],), None, self.eps), *qkv)
            qk = y[:, :(nq + nk) * hd].view(n, kk, nq + nk, hd)
            qk = qk * cos + qk.roll(hd // 2, -1) * sin
            k, v = self.k[i], self.v[i]
            k[:, :, :, t:t + kk] = qk[:, :, nq:].view(b, g, kk, nk, hd).permute(0, 3, 1, 2, 4)
            v[:, :, :, t:t + kk] = y[:, (nq + nk) * hd:].view(b, g, kk, nk, hd).permute(
                0, 3, 1, 2, 4)
            q = qk[:, :, :nq].view(b, g, kk, nk, r, hd).permute(
                0, 3, 1, 2, 4, 5).reshape(b, nk, g, kk * r, hd)
            prompt = torch.matmul(q.reshape(b, nk, m, hd), self.kp[i].transpose(-1, -2))
            since = torch.matmul(q, k[:, :, :, :t + kk].transpose(-1, -2))  # b,nk,g,k*r,t+k
            if causal is not None:
                since = since + causal
            prompt = prompt.view(b, nk, g, kk * r, p)
            if self.bias is not None:
                prompt = prompt + self.bias
            w = torch.cat([prompt, since], -1).softmax(-1)
            o = torch.matmul(w[..., :p].reshape(b, nk, m, p), self.vp[i]).view(
                b, nk, g, kk * r, hd) + torch.matmul(w[..., p:], v[:, :, :, :t + kk])
            o = o.view(b, nk, g, kk, r, hd).permute(0, 2, 3, 1, 4, 5).reshape(n * kk, nq * hd)
            x = _mm(o, *o_proj, add_to=x)
            gu = _mm(F.rms_norm(x, (x.shape[-1],), None, self.eps), *gate_up)
            x = _mm(F.silu(gu[:, :self.inter]) * gu[:, self.inter:], *down, add_to=x)
        self.t += kk
        x = x.view(n, kk, -1)[:, -1]
        return _mm(F.rms_norm(x, (x.shape[-1],), None, self.eps), *self.head)

    def _causal(self, kk: int, r: int, t: int) -> Tensor:
        """``[k * r, t + k]`` additive mask: the j-th fed token sees decoded slots ``<= t + j``."""
        j = torch.arange(kk, device=self.k.device).repeat_interleave(r)[:, None]
        slot = torch.arange(t + kk, device=self.k.device)[None, :]
        return torch.zeros(slot.shape[1], dtype=self.k.dtype, device=self.k.device).expand(
            kk * r, -1).masked_fill(slot > t + j, float("-inf"))


def _mm(h: Tensor, w: Any, b: Tensor | None, add_to: Tensor | None = None) -> Tensor:
    """``add_to + h @ w + b``: ``w`` is ``[in, out]`` (contiguous: MKL's fast layout for one
    row) or an int8-packed matrix (its bias packed with it)."""
    if not isinstance(w, Tensor):
        y = torch.ops.quantized.linear_dynamic(h, w, True)
        return y if add_to is None else add_to + y
    if add_to is not None:
        y = torch.addmm(add_to, h, w)  # the residual add rides on the product
        return y if b is None else y + b
    return torch.mm(h, w) if b is None else torch.addmm(b, h, w)


def _int8(mats: list[tuple[Tensor, Tensor | None]]) -> list[tuple[Any, None]]:
    """``quantize_dynamic`` (int8, per output channel) of ``[out, in]`` matrices + biases ->
    packed matrices for ``torch.ops.quantized.linear_dynamic``."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    lins = nn.ModuleList()
    for w, b in mats:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        lin.weight.data.copy_(w)
        if b is not None:
            lin.bias.data.copy_(b)
        lins.append(lin)
    with warnings.catch_warnings():  # torch.ao's quantized tensors warn of their future
        warnings.simplefilter("ignore")
        q = quantize_dynamic(lins, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return [(lin._packed_params._packed_params, None) for lin in q]


def _cat_bias(*pairs: tuple[Tensor | None, Tensor]) -> Tensor | None:
    """Biases of stacked ``(bias, weight)`` maps, zeros where one has none; None if none has."""
    if all(bias is None for bias, _ in pairs):
        return None
    return torch.cat([bias if bias is not None else w.new_zeros(w.shape[0]) for bias, w in pairs])


def make_step(lm: nn.Module, engine: str | Callable[[nn.Module], Any] = "auto"
              ) -> LlamaStep | HFStep | Any:
    """The decode step for ``lm``: ``"auto"`` = :class:`LlamaStep` when ``lm`` is
    Llama-shaped, else :class:`HFStep`; ``"hf"`` / ``"lean"`` force one; ``"int8"`` is
    :class:`LlamaStep` over int8 matrices; a callable ``engine(lm)`` builds any object with the
    same ``prefill`` / ``__call__``."""
    if callable(engine):
        return engine(lm)
    if engine not in ("auto", "hf", "lean", "int8"):
        raise ValueError(f"engine must be auto, hf, lean, int8 or a callable, got {engine!r}")
    if engine == "hf" or (engine == "auto" and not llama_shaped(lm)):
        return HFStep(lm)
    if not llama_shaped(lm):
        raise ValueError(f"{type(_base_lm(lm)).__name__} is not Llama-shaped: use engine='hf'")
    return LlamaStep(lm, int8=engine == "int8")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_completions(lm: nn.Module, embeds: Tensor, mask: Tensor, *, num_samples: int,
                       max_new_tokens: int, eos_token_id: int | None, pad_token_id: int,
                       do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
                       generator: torch.Generator | None = None, return_logits: bool = False,
                       choose: Callable[[Tensor], Tensor] | None = None,
                       engine: str | Callable[[nn.Module], Any] = "auto"
                       ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Prefill ``embeds [B, P, H]`` (LEFT-padded, ``mask [B, P]``) once, repeat its KV cache
    ``num_samples`` (G) times, then decode one token for all ``N = B * G`` rows per step.

    ``choose(logits [N, V]) -> tokens [N] or [N, k]`` replaces sampling when given (a stateful
    controller such as ``reason.guided.GuidedDecoder``; called once per step, in order); k > 1
    tokens (a run the controller forces on every row) are fed to the model in one step.
    ``engine`` picks the step (:func:`make_step`).

    Returns ``(ids [N, T], mask [N, T], step_logits)`` with ``T <= max_new_tokens`` (decoding
    stops once every row has produced EOS); rows after their EOS hold ``pad_token_id``.
    ``step_logits`` holds the raw ``[N, V]`` logits of each step when ``return_logits``.
    """
    step = make_step(lm, engine)
    logits = step.prefill(embeds, mask, num_samples, max_new_tokens)
    n = logits.shape[0]
    ids = torch.full((n, max_new_tokens), pad_token_id, dtype=torch.long, device=embeds.device)
    done = torch.zeros(n, dtype=torch.bool, device=embeds.device)
    kept: list[Tensor] = []
    t = 0
    while t < max_new_tokens:
        if return_logits:
            kept.append(logits.float().clone())
        tok = (choose(logits) if choose is not None
               else next_tokens(logits, do_sample, temperature, top_p, generator))
        tok = tok.view(n, -1)[:, :max_new_tokens - t].masked_fill(done[:, None], pad_token_id)
        if tok.shape[1] > 1 and return_logits:
            raise ValueError("return_logits needs one token per step")
        if eos_token_id is not None:
            hit = (tok == eos_token_id).cumsum(1) > 0
            if tok.shape[1] > 1:  # a row's tokens after its EOS inside a forced run: padding
                tok = tok.masked_fill(F.pad(hit[:, :-1], (1, 0)), pad_token_id)
            done |= hit[:, -1]
        ids[:, t:t + tok.shape[1]] = tok
        t += tok.shape[1]
        if t == max_new_tokens or bool(done.all()):
            break
        logits = step(tok)
    ids = ids[:, :t]
    return ids, completion_mask_from_eos(ids, eos_token_id), kept
