"""GRPO rollouts: sample G completions per study with the shared prompt prefilled once.

A study's prompt (view names, clip tokens, structure tokens) is long and identical for the G
samples of its group. ``transformers``' ``generate(num_return_sequences=G)`` expands the prompt
G times and prefills all copies; here the prompt is prefilled once per study and its KV cache is
repeated G times, then the one decoding loop (:func:`echosonar.reason.decode.sample_completions`)
decodes one token for all rows per step.

The same prefix sharing is used for training log-probs (:func:`completion_logps`): the prompt is
run once per study *with* gradient, its cache repeated, and the G completions are run on top —
autograd flows through ``repeat_interleave`` into the projectors.

Completion masks come from the FIRST EOS (EOS included), never from pad equality: many
tokenizers use ``pad == eos``, and a completion may legitimately contain the pad id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from echosonar.reason.decode import (  # noqa: F401 - re-exported: the GRPO code's vocabulary
    _base_lm,
    completion_mask_from_eos,
    lm_forward,
    new_cache,
    next_tokens,
    prompt_positions,
    repeat_cache,
    sample_completions,
    top_p_filter,
)


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
    if hasattr(policy, "decode_inputs"):  # EchoSonarR: one prompt pass (cache, copy keys)
        embeds, mask, pre, engine = policy.decode_inputs(studies)
    else:
        (embeds, mask), pre, engine = policy.prompt_embeds(studies), None, "auto"
    max_len = getattr(getattr(policy, "config", None), "max_len", None)
    if isinstance(max_len, int) and max_len > 0:
        max_new_tokens = max(1, min(max_new_tokens, max_len - embeds.shape[1]))
    ids, cmask, logits = sample_completions(
        policy.lm, embeds, mask, num_samples=num_samples, max_new_tokens=max_new_tokens,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=do_sample,
        temperature=temperature, top_p=top_p, generator=generator, return_logits=return_logits,
        engine=engine, prefilled=pre)
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
