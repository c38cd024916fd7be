"""The hand-written decode step of a Llama-shaped HF model (Llama, Qwen2; LoRA adapters
included): :class:`LlamaStep`, used by the one decoding loop (:mod:`echosonar.reason.decode`).

Why. A transformers forward with a cache costs about sixty Python-level module calls, mask
building and cache bookkeeping per token; this step reads the model's weights once per decoding
call and runs a token for every row as about twenty tensor ops per layer. Measured here
(docs/bench/decode.md) a step is then close to its memory floor: the weights (8.6 MB at the
default size) and the prompt's keys/values (9.5 MB at 1,550 positions, per study) must be read
every token, which is why

* q, k and v are one matrix, gate and up another, stored ``[in, out]`` (MKL's fast layout for a
  few rows); RMSNorm weights and attention's 1/sqrt(hd) are folded into the matrices; residual
  adds ride on ``addmm``;
* the prompt is prefilled once per study by the HF model (also for the G samples of a GRPO
  group) and its keys/values are read once per step for the whole group, never copied G times;
* the tokens decoded since go to a preallocated static cache, written in place; left padding is
  an additive mask over the prompt's slots;
* a run of k tokens a controller forces (guided decoding's skeleton) is fed in one step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echosonar.reason.decode import Prefill, _base_lm, prefill_prompt


def _affine(mod: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(weight [out, in], bias [out] or None)`` of a linear map. A plain ``nn.Linear`` gives
    its parameters; anything else (a LoRA-wrapped linear, PEFT trainable tokens) is read by
    probing it with the identity, which is exact for every affine module and costs one
    ``in x in x out`` product per call."""
    if type(mod) is nn.Linear:
        return mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
    w = mod.weight  # [out, in]: wrappers forward .weight (PEFT: the base's or the merged one)
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    was_training = mod.training
    mod.eval()  # (LoRA dropout would make the probe random)
    try:
        b = mod(torch.zeros_like(eye[:1]))
        return (mod(eye) - b).t(), (b[0] if bool(b.any()) else None)
    finally:
        mod.train(was_training)


def _table(mod: nn.Module) -> Tensor:
    """The embedding table ``[V, H]`` (also of a wrapped embedding, e.g. PEFT trainable
    tokens: read by looking every id up)."""
    if type(mod) is nn.Embedding:
        return mod.weight.detach()
    w, was_training = mod.weight, mod.training
    mod.eval()
    try:
        return mod(torch.arange(w.shape[0], device=w.device))
    finally:
        mod.train(was_training)


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
        self.norm_w = dec.norm.weight.detach()
        #: set by a wrapping step that needs ``last_hidden`` ([N, H], after the final norm)
        self.want_hidden = False

    def prefill(self, embeds: Tensor, mask: Tensor, g: int, budget: int,
                prefilled: Prefill | None = None) -> Tensor:
        """HF prefill of the B prompts (or reuse ``prefilled``, their ``decode.Prefill``);
        returns the first logits ``[B * G, V]``."""
        pre = prefilled or prefill_prompt(self.lm, embeds, mask)
        cache = pre.cache
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
        return pre.logits.repeat_interleave(g, 0)

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
        xn = F.rms_norm(x, (x.shape[-1],), None, self.eps)
        if self.want_hidden:  # the final normed state (the copy head reads it)
            self.last_hidden = xn * self.norm_w
        return _mm(xn, *self.head)

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
