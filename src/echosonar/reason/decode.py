"""The one decoding loop of EchoSonar-R: evaluation, ``analyze`` and GRPO rollouts all call
:func:`sample_completions`.

The loop is the same for every model; the step it drives is not. A Llama-shaped LM (the
from-scratch EchoSonar-R, or a local Llama/Qwen2 with LoRA) decodes through the hand-written
:class:`echosonar.reason.llama_step.LlamaStep` (static cache, fused matrices, the prompt's
cache shared by a GRPO group, forced runs in one step); anything else (another architecture
behind LoRA, sliding windows, length-dependent RoPE scaling) through :class:`HFStep`, the
model's own forward with a cache. Both answer the same two calls: ``prefill(embeds, mask, G,
T, prefilled=None)`` -> the first logits, then ``step(tokens [N, k])`` -> the logits after them;
a wrapping step (the copy head's) passes ``prefilled`` on to the step it wraps.

One pass over a prompt serves everything that reads it: :func:`prefill_prompt` returns the cache,
the first logits and (on request) the final hidden states, which the label head and the copy
head read; handed to :func:`sample_completions` as ``prefilled``, the step reuses it.

Completion masks come from the FIRST EOS (EOS included), never from pad equality: many
tokenizers use ``pad == eos``, and a completion may legitimately contain the pad id.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Prefill:
    """One pass of the model over LEFT-padded prompts (:func:`prefill_prompt`): its KV
    ``cache``, the ``logits`` ``[B, V]`` after each prompt's last token and, when asked for,
    the final normed hidden states ``hidden`` ``[B, P, H]`` (what the label head and the copy
    head read), so one pass serves them and the decoding."""

    cache: Any
    logits: Tensor
    hidden: Tensor | None = None


def prefill_prompt(lm: nn.Module, embeds: Tensor, mask: Tensor, hidden: bool = False
                   ) -> Prefill:
    """Run ``lm`` over ``embeds [B, P, H]`` (``mask [B, P]``) with a fresh cache, positions as
    HF ``generate`` builds them (:func:`prompt_positions`)."""
    cache = new_cache()
    out = lm_forward(lm, cache=cache, inputs_embeds=embeds, attention_mask=mask,
                     position_ids=prompt_positions(mask), use_cache=True, logits_to_keep=1,
                     output_hidden_states=hidden)
    return Prefill(cache, out.logits[:, -1, :], out.hidden_states[-1] if hidden else None)


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
# Decode steps: prefill(embeds, mask, G, T, prefilled) -> first logits; step(tokens) -> logits
# ---------------------------------------------------------------------------------------------


class HFStep:
    """The model's own forward with a KV cache (prompt prefilled once, repeated G times, then
    grown in place). Works for any HF causal LM; the reference the fast step is tested
    against."""

    def __init__(self, lm: nn.Module) -> None:
        self.lm = lm
        #: set by a wrapping step that needs ``last_hidden`` ([N, H], after the final norm)
        self.want_hidden = False

    def prefill(self, embeds: Tensor, mask: Tensor, g: int, budget: int,
                prefilled: Prefill | None = None) -> Tensor:
        """Prefill the B prompts (or reuse ``prefilled``, their :func:`prefill_prompt`);
        returns the first logits ``[B * G, V]``."""
        pre = prefilled or prefill_prompt(self.lm, embeds, mask)
        self.cache = pre.cache
        repeat_cache(self.cache, g)
        preallocate_cache(self.cache, budget)
        self.attn = mask.repeat_interleave(g, 0)
        self.pos = mask.long().sum(-1, keepdim=True).repeat_interleave(g, 0)  # last pos + 1
        return pre.logits.repeat_interleave(g, 0)

    def __call__(self, tok: Tensor) -> Tensor:
        """``tok [N, k]`` (k >= 1 tokens per row) -> logits after the last one ``[N, V]``."""
        n, k = tok.shape
        self.attn = torch.cat([self.attn, self.attn.new_ones(n, k)], dim=1)
        pos = self.pos + torch.arange(k, device=tok.device)
        out = lm_forward(self.lm, cache=self.cache, input_ids=tok, attention_mask=self.attn,
                         position_ids=pos, use_cache=True, logits_to_keep=1,
                         output_hidden_states=self.want_hidden)
        self.pos = self.pos + k
        if self.want_hidden:  # the final normed state (the copy head reads it)
            self.last_hidden = out.hidden_states[-1][:, -1]
        return out.logits[:, -1, :]


#: the named decode steps (:func:`make_step`)
ENGINES: tuple[str, ...] = ("auto", "int8", "hf", "lean")


def make_step(lm: nn.Module, engine: str | Callable[[nn.Module], Any] = "auto") -> Any:
    """The decode step for ``lm``: ``"auto"`` = :class:`LlamaStep` when ``lm`` is
    Llama-shaped, else :class:`HFStep`; ``"hf"`` / ``"lean"`` force one; ``"int8"`` is
    :class:`LlamaStep` over int8 matrices; a callable ``engine(lm)`` builds any object with the
    same ``prefill`` / ``__call__``."""
    from echosonar.reason.llama_step import LlamaStep, llama_shaped

    if callable(engine):
        return engine(lm)
    if engine not in ENGINES:
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
                       engine: str | Callable[[nn.Module], Any] = "auto",
                       prefilled: Prefill | None = None
                       ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Prefill ``embeds [B, P, H]`` (LEFT-padded, ``mask [B, P]``) once, repeat its KV cache
    ``num_samples`` (G) times, then decode one token for all ``N = B * G`` rows per step.

    ``choose(logits [N, V]) -> tokens [N] or [N, k]`` replaces sampling when given (a stateful
    controller such as ``reason.guided.GuidedDecoder``; called once per step, in order); k > 1
    tokens (a run the controller forces on every row) are fed to the model in one step.
    ``engine`` picks the step (:func:`make_step`). ``prefilled``: these prompts'
    :func:`prefill_prompt`, already run (e.g. for the label head), reused instead of a second
    pass.

    Returns ``(ids [N, T], mask [N, T], step_logits)`` with ``T <= max_new_tokens`` (decoding
    stops once every row has produced EOS); rows after their EOS hold ``pad_token_id``.
    ``step_logits`` holds the raw ``[N, V]`` logits of each step when ``return_logits``.
    """
    step = make_step(lm, engine)
    logits = step.prefill(embeds, mask, num_samples, max_new_tokens, prefilled=prefilled)
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
