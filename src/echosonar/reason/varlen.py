"""Teacher-forced passes over the real tokens only: the decoder of a Llama-shaped HF model run on
a batch's sequences laid end to end, with no padding or filler.

Why. SFT and GRPO's log-prob pass read each study's prompt and completion (``EchoSonarR._packed``).
Padded to the longest row of the batch, a random SFT batch of the default cache computes about
15 % more token rows than it holds, and causal attention -- the S^2 term, most of the step once
the products run in bf16 (``sft.precision``) -- more still. Here every matrix product sees only
the ``N = sum(len_i)`` real rows, and attention runs per sequence (``is_causal`` over its own
length). The modules are the model's own (LoRA wrappers included), called in the order of
transformers' Llama/Qwen2 decoder layer; only RMSNorm (``F.rms_norm``), the rotary embedding
and the attention call are written out. Equal to the padded HF pass within float rounding
(tests/reason/test_varlen.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echosonar.reason.decode import _base_lm


def varlen_hidden(lm: nn.Module, x: Tensor, lens: list[int]) -> Tensor:
    """Final normed hidden states ``[N, H]`` of the sequences ``x`` ``[N, H]`` (input
    embeddings of sequence 0, then sequence 1, ... with ``lens[i]`` rows each; positions restart
    at 0 in every sequence). ``lm`` must be Llama-shaped (``llama_step.llama_shaped``)."""
    base = _base_lm(lm)
    cfg, dec = base.config, base.model
    nq, nk = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(dec.layers[0].self_attn, "head_dim", None) or cfg.hidden_size // nq
    pos = torch.cat([torch.arange(n, device=x.device) for n in lens])
    cos, sin = dec.rotary_emb(x[None], pos[None])  # [1, N, hd]
    cos, sin = cos[0, :, None, :].to(x.dtype), sin[0, :, None, :].to(x.dtype)
    bounds = [0]
    for n in lens:
        bounds.append(bounds[-1] + n)
    drop = float(getattr(cfg, "attention_dropout", 0.0) or 0.0) if lm.training else 0.0

    def rotary(t: Tensor) -> Tensor:  # [N, heads, hd]
        return t * cos + torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1) * sin

    h = x
    for layer in dec.layers:
        a, m = layer.self_attn, layer.mlp
        y = _rms(layer.input_layernorm, h)
        q = rotary(a.q_proj(y).view(-1, nq, hd))
        k = rotary(a.k_proj(y).view(-1, nk, hd))
        v = a.v_proj(y).view(-1, nk, hd)
        o = torch.cat([F.scaled_dot_product_attention(
            q[s:e].transpose(0, 1)[None], k[s:e].transpose(0, 1)[None],
            v[s:e].transpose(0, 1)[None], dropout_p=drop, is_causal=True,
            enable_gqa=nq != nk)[0].transpose(0, 1)
            for s, e in zip(bounds[:-1], bounds[1:], strict=True)], 0)
        h = h + a.o_proj(o.reshape(-1, nq * hd))
        y = _rms(layer.post_attention_layernorm, h)
        h = h + m.down_proj(m.act_fn(m.gate_proj(y)) * m.up_proj(y))
    return _rms(dec.norm, h)


def packed_hidden(lm: nn.Module, full: Tensor, real: Tensor) -> Tensor:
    """The decoder's final hidden states in ``EchoSonarR._packed``'s layout: ``full`` ``[B, L,
    H]`` holds each row's real positions contiguously (``real`` ``[B, L]`` bool); returns
    ``[B, S, H]`` with row i's real rows at ``[0, len_i)`` and zeros after (S = max len_i)."""
    lens = real.sum(1)
    h = varlen_hidden(lm, full[real], lens.tolist())
    s = int(lens.max())
    where = torch.arange(s, device=full.device)[None] < lens[:, None]
    return h.new_zeros(len(lens), s, h.shape[-1]).masked_scatter(where[..., None], h)


def _rms(norm: nn.Module, h: Tensor) -> Tensor:
    """A Llama/Qwen2 RMSNorm module applied in one fused call (fp32 math, as HF's)."""
    out = F.rms_norm(h.float(), (h.shape[-1],), None, norm.variance_epsilon)
    return norm.weight * out.to(h.dtype)
