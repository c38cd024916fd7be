"""GRPO rollouts: sample G completions per study with the shared prompt prefilled once.

A study's prompt (view names, clip tokens, structure tokens) is long and identical for the G
samples of its group. ``transformers``' ``generate(num_return_sequences=G)`` expands the prompt
G times and prefills all copies; here the prompt is prefilled once per study and its KV cache is
repeated G times (``DynamicCache.batch_repeat_interleave``), then a plain sampling loop decodes
one token per step from that cache, written in place into preallocated buffers (a plain
``DynamicCache`` re-copies itself with ``torch.cat`` at every token).

The same prefix sharing is used for training log-probs (:func:`completion_logps`): the prompt is
run once per study *with* gradient, its cache repeated, and the G completions are run on top —
autograd flows through ``repeat_interleave`` into the projectors.

Completion masks come from the FIRST EOS (EOS included), never from pad equality: many
tokenizers use ``pad == eos``, and a completion may legitimately contain the pad id.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


class GRPOPolicy(Protocol):
    """What GRPO needs from a policy (``reason.model.EchoSonarR`` satisfies it).

    ``prompt_embeds(batch)`` returns LEFT-padded ``(embeds [B, P, H], attention_mask [B, P])``.
    ``lm`` is a HF causal LM taking ``inputs_embeds`` / ``input_ids``, ``attention_mask``,
    ``position_ids`` and a KV cache; ``tokenizer`` has ``eos_token_id``, ``pad_token_id``,
    ``decode``.
    """

    tokenizer: Any
    lm: torch.nn.Module

    def prompt_embeds(self, batch: list[Any]) -> tuple[Tensor, Tensor]: ...


@dataclass
class Rollout:
    """Sampled completions, ``N = B * G`` rows, grouped study by study (row ``i`` is study
    ``i // G``).

    Attributes:
        completion_ids: long ``[N, T]``; positions after the first EOS hold ``pad_token_id``.
        completion_mask: long ``[N, T]``; 1 up to and including the first EOS.
        texts: decoded completions, cut before the first EOS.
        truncated: bool ``[N]``; True when no EOS was produced within ``max_new_tokens``.
        step_logits: optional list (one per decoding step) of float ``[N, V]`` raw logits.
    """

    completion_ids: Tensor
    completion_mask: Tensor
    texts: list[str]
    truncated: Tensor
    step_logits: list[Tensor] | None = None

    @property
    def lengths(self) -> Tensor:
        """Tokens per completion, EOS included: long ``[N]``."""
        return self.completion_mask.sum(-1)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _cache_kw_for(cls: type) -> str:
    # transformers 5.x renamed ``past_key_values`` to ``cache``; accept both.
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _base_lm(lm: torch.nn.Module) -> torch.nn.Module:
    """Unwrap PEFT / DDP wrappers to the HF model (for signatures and embeddings)."""
    for _ in range(8):
        if isinstance(lm, torch.nn.parallel.DistributedDataParallel):
            inner = lm.module
        elif hasattr(lm, "get_base_model"):
            inner = lm.get_base_model()
        else:
            return lm
        if inner is lm:
            return lm
        lm = inner
    return lm


def lm_forward(lm: torch.nn.Module, cache: Any = None, **kwargs: Any) -> Any:
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

    Only for no-grad decoding (in-place writes). Layers that are not plain full-attention
    layers with ``keys``/``values`` tensors are left as they are.
    """
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
    """Pick one token per row from raw logits ``[N, V]`` -> long ``[N]``."""
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    scores = top_p_filter(logits.float() / temperature, top_p)
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def sample_completions(lm: torch.nn.Module, embeds: Tensor, mask: Tensor, *, num_samples: int,
                       max_new_tokens: int, eos_token_id: int | None, pad_token_id: int,
                       do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
                       generator: torch.Generator | None = None,
                       return_logits: bool = False,
                       choose: Callable[[Tensor], Tensor] | None = None
                       ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Prefill ``embeds [B, P, H]`` once, repeat the KV cache ``num_samples`` times, decode.

    ``choose(logits [B*G, V]) -> tokens [B*G]`` replaces sampling when given (a stateful
    controller such as ``reason.guided.GuidedDecoder``; it is called once per step, in order).

    Returns ``(ids [B*G, T], mask [B*G, T], step_logits)`` with ``T <= max_new_tokens`` (decoding
    stops early once every row has produced EOS); rows after their EOS hold ``pad_token_id``.
    ``step_logits`` holds the raw ``[B*G, V]`` logits of each step when ``return_logits``.
    """
    g = num_samples
    pos = prompt_positions(mask)
    cache = new_cache()
    out = lm_forward(lm, cache=cache, inputs_embeds=embeds, attention_mask=mask,
                     position_ids=pos, use_cache=True, logits_to_keep=1)
    logits = out.logits[:, -1, :].repeat_interleave(g, 0)
    repeat_cache(cache, g)
    preallocate_cache(cache, max_new_tokens)
    attn = mask.repeat_interleave(g, 0)
    next_pos = (mask.long().sum(-1, keepdim=True)).repeat_interleave(g, 0)  # = last pos + 1
    n = logits.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=embeds.device)
    ids: list[Tensor] = []
    kept: list[Tensor] = []
    for t in range(max_new_tokens):
        if return_logits:
            kept.append(logits.float().clone())
        tok = (choose(logits) if choose is not None
               else next_tokens(logits, do_sample, temperature, top_p, generator))
        tok = tok.masked_fill(done, pad_token_id)
        ids.append(tok)
        if eos_token_id is not None:
            done = done | (tok == eos_token_id)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        attn = torch.cat([attn, attn.new_ones(n, 1)], dim=1)
        out = lm_forward(lm, cache=cache, input_ids=tok[:, None], attention_mask=attn,
                         position_ids=next_pos, use_cache=True)
        next_pos = next_pos + 1
        logits = out.logits[:, -1, :]
    comp = torch.stack(ids, dim=1) if ids else torch.empty(n, 0, dtype=torch.long)
    return comp, completion_mask_from_eos(comp, eos_token_id), kept


def decode_completions(tokenizer: Any, ids: Tensor, mask: Tensor,
                       eos_token_id: int | None) -> list[str]:
    """Decode each row up to (not including) its first EOS. Special tokens are kept: the format
    tags may be special tokens, and dropping them would hide malformed outputs."""
    texts = []
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        n = sum(m)
        if eos_token_id is not None and n and row[n - 1] == eos_token_id:
            n -= 1
        texts.append(tokenizer.decode(row[:n], skip_special_tokens=False))
    return texts


@torch.no_grad()
def rollout(policy: GRPOPolicy, studies: list[Any], *, num_samples: int, max_new_tokens: int,
            do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0,
            generator: torch.Generator | None = None, return_logits: bool = False) -> Rollout:
    """G completions for every study in ``studies`` (rows grouped study by study). The budget
    is capped so that prompt + completion fit ``policy.config.max_len`` when the policy has
    one."""
    tok = policy.tokenizer
    embeds, mask = policy.prompt_embeds(studies)
    max_len = getattr(getattr(policy, "config", None), "max_len", None)
    if isinstance(max_len, int) and max_len > 0:
        max_new_tokens = max(1, min(max_new_tokens, max_len - embeds.shape[1]))
    ids, cmask, logits = sample_completions(
        policy.lm, embeds, mask, num_samples=num_samples, max_new_tokens=max_new_tokens,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=do_sample,
        temperature=temperature, top_p=top_p, generator=generator, return_logits=return_logits)
    truncated = ~(ids == tok.eos_token_id).any(-1) if tok.eos_token_id is not None else \
        torch.ones(ids.shape[0], dtype=torch.bool)
    texts = decode_completions(tok, ids, cmask, tok.eos_token_id)
    return Rollout(ids, cmask, texts, truncated, logits if return_logits else None)


# ---------------------------------------------------------------------------------------------
# Log-probs for the loss (policy, old policy, reference)
# ---------------------------------------------------------------------------------------------

def selective_logps(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """``log softmax(logits / temperature)`` at ``ids``: ``[N, T, V], [N, T] -> [N, T]``."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` per position: ``[N, T, V] -> [N, T]``."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def completion_logps(lm: torch.nn.Module, embeds: Tensor, mask: Tensor, completion_ids: Tensor,
                     completion_mask: Tensor, num_samples: int, temperature: float = 1.0,
                     with_entropy: bool = False,
                     share_prompt: bool = True) -> tuple[Tensor, Tensor | None]:
    """Per-token log-probs of completions under ``lm``, from temperature-scaled logits.

    Args:
        embeds, mask: one prompt per study, LEFT-padded ``[B, P, H]`` / ``[B, P]``.
        completion_ids, completion_mask: ``[B*G, T]``, grouped study by study.
        share_prompt: run the prompt once and repeat its KV cache G times (default), or
            concatenate prompt and completion for each of the B*G rows (reference path).

    Returns ``(logps [B*G, T], entropy [B*G, T] or None)``. Differentiable when grad is on.
    """
    g = num_samples
    emb_layer = _base_lm(lm).get_input_embeddings()
    if share_prompt:
        cache = new_cache()
        pos = prompt_positions(mask)
        first = lm_forward(lm, cache=cache, inputs_embeds=embeds, attention_mask=mask,
                           position_ids=pos, use_cache=True, logits_to_keep=1).logits
        repeat_cache(cache, g)
        attn = torch.cat([mask.repeat_interleave(g, 0), completion_mask.to(mask.dtype)], dim=1)
        cpos = mask.long().sum(-1, keepdim=True).repeat_interleave(g, 0) + torch.arange(
            completion_ids.shape[1], device=mask.device)[None, :]
        rest = lm_forward(lm, cache=cache, inputs_embeds=emb_layer(completion_ids),
                          attention_mask=attn, position_ids=cpos, use_cache=True).logits
        logits = torch.cat([first.repeat_interleave(g, 0), rest[:, :-1]], dim=1)
    else:
        full = torch.cat([embeds.repeat_interleave(g, 0), emb_layer(completion_ids)], dim=1)
        attn = torch.cat([mask.repeat_interleave(g, 0), completion_mask.to(mask.dtype)], dim=1)
        t = completion_ids.shape[1]
        out = lm_forward(lm, inputs_embeds=full, attention_mask=attn,
                         position_ids=prompt_positions(attn), logits_to_keep=t + 1).logits
        logits = out[:, :-1]
    logps = selective_logps(logits, completion_ids, temperature)
    ent = entropy_from_logits(logits.detach(), temperature) if with_entropy else None
    return logps, ent
