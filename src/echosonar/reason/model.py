"""EchoSonar-R: a HF causal LM reading projected clip and structure tokens.

``prompt_embeds`` turns a batch of ``StudyFeatures`` into LEFT-padded prompt embeddings: the
prompt text (:mod:`echosonar.reason.prompt`) is tokenised with ``<clip>``/``<struct>``
placeholders, embedded, and the placeholder rows are replaced by the projected features
(LayerNorm -> Linear -> GELU -> Linear, one projector per token kind; structure rows also get the
detector score as an extra input column and a learned per-class embedding).

Positions: always pass ``position_ids = position_ids_from_mask(mask)`` to ``model.lm`` (HF
defaults to ``arange``, which shifts left-padded rows); ``generate`` (through
``decode.sample_completions``) uses ``decode.prompt_positions``, the same positions for real
tokens with HF ``generate``'s value on pads, so it matches HF token for token. Teacher-forced passes
(``forward_sft``, ``completion_logprobs``) re-pack each row as [prompt, completion, filler] so a
plain causal mask is exact (see ``_packed``). Either way a study's logits do not depend on its
batch's padding (tested).

Per-label scores: a light head (LayerNorm -> Linear) on [masked mean, last] of the LM's final
hidden states over the prompt positions, plus (``config.measurement_head``) a linear head on the
detector's measurements as numbers (:mod:`echosonar.reason.measure_head`), trained jointly with
BCE. It never sees the target.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from echosonar.config.reason import LMConfig
from echosonar.reason.answer_copy import (
    SELF,
    AnswerSources,
    completion_slots,
    teacher_forced_sources,
)
from echosonar.reason.copy_head import CopyHead, pointer_nll
from echosonar.reason.decode import (
    _base_lm,
    _cache_kw_for,
    prefill_prompt,
    sample_completions,
)
from echosonar.reason.measure_head import MeasurementHead
from echosonar.reason.prompt import PromptParts, build_prompt
from echosonar.reason.targets import decision_weights, encode_targets, target_segments
from echosonar.reason.tokenizer import CLIP, STRUCT, check_tokenizer
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import LABEL_KEYS, STRUCTURES, VIEWS


def projector(d_in: int, d_out: int, init_std: float = 0.02) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Linear; ``[..., d_in] -> [..., d_out]``."""
    proj = nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out), nn.GELU(),
                         nn.Linear(d_out, d_out))
    nn.init.normal_(proj[3].weight, std=init_std)  # match the token-embedding scale
    nn.init.zeros_(proj[3].bias)
    return proj


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """``[B, S]`` 0/1 attention mask -> ``[B, S]`` positions counting real tokens only."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class EchoSonarR(nn.Module):
    """The reasoning VLM. Attributes: ``tokenizer`` (HF fast, left padding), ``lm`` (a
    ``...ForCausalLM``, PEFT-wrapped when ``config.base_model`` is set), ``config`` (LMConfig),
    ``feature_dims`` (``{"clip": D_enc, "structure": D_det}``)."""

    checkpoint_kind = "echosonar_r"
    #: teacher-forced passes of a Llama-shaped LM over real tokens only (``_packed``)
    varlen = True

    def __init__(self, config: LMConfig, tokenizer: Any, lm: nn.Module,
                 feature_dims: dict[str, int]) -> None:
        super().__init__()
        check_tokenizer(tokenizer)
        self.config, self.tokenizer, self.lm = config, tokenizer, lm
        self.feature_dims = {"clip": int(feature_dims["clip"]),
                             "structure": int(feature_dims["structure"])}
        h = lm.config.get_text_config().hidden_size
        self.hidden_size = h
        self.clip_proj = projector(self.feature_dims["clip"], h, config.init_std)
        if config.use_structure_tokens:
            self.struct_proj = projector(self.feature_dims["structure"] + 1, h, config.init_std)
            self.struct_type = nn.Embedding(len(STRUCTURES), h)
            nn.init.normal_(self.struct_type.weight, std=config.init_std)
        if config.view_segments:  # row 0: outside any view block
            self.view_segment = nn.Embedding(len(VIEWS) + 1, h)
            nn.init.normal_(self.view_segment.weight, std=config.init_std)
        if config.copy_answer_slots not in ("mentions", "first"):
            raise ValueError(f"lm.copy_answer_slots must be 'mentions' or 'first', got "
                             f"{config.copy_answer_slots!r}")
        if config.copy_tokens not in ("evidence", "numbers"):
            raise ValueError(f"lm.copy_tokens must be 'evidence' or 'numbers', got "
                             f"{config.copy_tokens!r}")
        self.copy_head = CopyHead(h, follow=config.copy_follow) if config.copy_head else None
        if self.copy_head is not None:
            self.copy_head.shut_when_empty = config.copy_answer
        self.label_head = nn.Sequential(nn.LayerNorm(2 * h), nn.Linear(2 * h, len(LABEL_KEYS)))
        self.meas_head = MeasurementHead(len(LABEL_KEYS)) if config.measurement_head else None
        self.clip_id = tokenizer.convert_tokens_to_ids(CLIP)
        self.struct_id = tokenizer.convert_tokens_to_ids(STRUCT)
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.cache_kw = _cache_kw_for(type(_base_lm(lm)))  # "cache" or "past_key_values"

    @property
    def device(self) -> torch.device:
        return self.clip_proj[1].weight.device

    # ------------------------------------------------------------------ prompt
    def prompt_parts(self, sf: StudyFeatures) -> PromptParts:
        """One study's prompt laid out as this model's config says (:func:`build_prompt`)."""
        c = self.config
        return build_prompt(sf, c.use_structure_tokens, c.max_clip_tokens, c.measurement_flags)

    def prompt_ids(self, batch: list[StudyFeatures]) -> list[list[int]]:
        """Token ids of each study's prompt (placeholders included, bos first)."""
        return [self.tokenizer(self.prompt_parts(sf).text,
                               add_special_tokens=False)["input_ids"] for sf in batch]

    def prompt_embeds(self, batch: list[StudyFeatures]) -> tuple[Tensor, Tensor]:
        """LEFT-padded prompt embeddings ``[B, P, H]`` and attention mask ``[B, P]`` (1 = real).

        Raises ``ValueError`` (naming the study) when a study's feature widths differ from the
        model's ``feature_dims``.
        """
        emb, mask, _, _, _ = self.prompt_inputs(batch)
        return emb, mask

    def prompt_inputs(self, batch: list[StudyFeatures]
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
        """:meth:`prompt_embeds` plus the prompt's token ids ``[B, P]`` (pad where masked),
        for models with view segments or a copy head each token's view segment ``[B, P]``
        (:meth:`PromptParts.segment_ids`; else None), and for models with a copy head the
        ``[B, P]`` bool mask of the tokens it may copy (``lm.copy_tokens``; else None)."""
        dev = self.device
        parts = [self.prompt_parts(sf) for sf in batch]
        for sf, p in zip(batch, parts, strict=True):
            if p.clip.shape[1] != self.feature_dims["clip"] or (
                    p.struct.shape[0] and p.struct.shape[1] != self.feature_dims["structure"] + 1):
                raise ValueError(
                    f"study {sf.key}: feature widths clip={p.clip.shape[1]}, structure="
                    f"{p.struct.shape[1] - 1 if p.struct.shape[0] else '-'} do not match the "
                    f"model's {self.feature_dims}")
        want_seg = self.config.view_segments or self.copy_head is not None
        enc = [self.tokenizer(p.text, add_special_tokens=False,
                              return_offsets_mapping=want_seg) for p in parts]
        ids = [e["input_ids"] for e in enc]
        plen = max(len(x) for x in ids)
        if plen > self.config.max_len:
            raise ValueError(f"prompt of {plen} tokens exceeds lm.max_len={self.config.max_len}; "
                             "raise max_len or lower lm.max_clip_tokens")
        tok = torch.full((len(ids), plen), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), plen), dtype=torch.long)
        for i, x in enumerate(ids):
            tok[i, plen - len(x):] = torch.tensor(x)
            mask[i, plen - len(x):] = 1
        tok, mask = tok.to(dev), mask.to(dev)
        emb = self.lm.get_input_embeddings()(tok)
        clip = torch.from_numpy(_cat([p.clip for p in parts])).to(dev)
        emb = _scatter(emb, tok == self.clip_id, self.clip_proj(clip), "clip")
        if self.config.use_structure_tokens:
            st = torch.from_numpy(_cat([p.struct for p in parts])).to(dev)
            kind = torch.from_numpy(_cat([p.struct_type for p in parts])).to(dev)
            emb = _scatter(emb, tok == self.struct_id,
                           self.struct_proj(st) + self.struct_type(kind), "structure")
        seg = cite = None
        if want_seg:
            seg = torch.zeros((len(ids), plen), dtype=torch.long)
            for i, (p, e) in enumerate(zip(parts, enc, strict=True)):
                seg[i, plen - len(e["input_ids"]):] = torch.from_numpy(
                    p.segment_ids(e["offset_mapping"]))
            seg = seg.to(dev)
        if self.config.view_segments:
            emb = emb + self.view_segment(seg)
        if self.copy_head is not None:
            if self.config.copy_tokens == "numbers":
                cite = self._number_tokens(tok) & mask.bool()
            else:
                cite = torch.zeros((len(ids), plen), dtype=torch.bool)
                for i, (p, e) in enumerate(zip(parts, enc, strict=True)):
                    cite[i, plen - len(e["input_ids"]):] = torch.from_numpy(
                        p.cite_mask(e["offset_mapping"]))
                cite = cite.to(dev)
        return emb, mask, tok, seg, cite

    # ------------------------------------------------------------------ forward passes
    def _hidden(self, embeds: Tensor, mask: Tensor) -> Tensor:
        """Final hidden states ``[B, S, H]`` of the decoder (LoRA included, no LM head)."""
        out = self.lm.get_decoder()(inputs_embeds=embeds, attention_mask=mask,
                                    position_ids=position_ids_from_mask(mask), use_cache=False)
        return out.last_hidden_state

    @staticmethod
    def _pooled(hidden: Tensor, mask: Tensor, last: Tensor | None = None) -> Tensor:
        """``[B, 2H]`` float32: [masked mean of ``hidden`` over ``mask``, hidden at index
        ``last`` (default: the final position, the prompt's last token under left padding)]."""
        m = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        end = hidden[:, -1] if last is None else hidden[torch.arange(len(hidden)), last]
        return torch.cat([mean, end], -1).float()

    def _label_logits(self, pooled: Tensor, batch: list[StudyFeatures]) -> Tensor:
        """``[B, L]``: the hidden-state head on ``pooled`` (:meth:`_pooled`), plus the
        measurement head on ``batch``'s detector numbers when the model has one."""
        logits = self.label_head(pooled)
        if self.meas_head is not None:
            logits = logits + self.meas_head(batch).to(logits.device)
        return logits

    def _packed(self, embeds: Tensor, pmask: Tensor, ids: Tensor, imask: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced pass over prompt + completion, RIGHT-packed for speed.

        Row i becomes its p_i real prompt rows, its t_i completion rows, then filler: with
        padding only at the end, a plain causal mask is exact for every real position (filler
        comes after them), so attention runs as ``is_causal`` (about half the FLOPs of a padded
        mask) and positions are ``arange``. Returns ``(hidden [B, S, H], pos_mask [B, S]`` (1 on
        prompt rows), ``plen [B])``; completion token j of row i is predicted at p_i - 1 + j.
        A Llama-shaped LM (``varlen`` on) computes only the real rows, no filler
        (:mod:`echosonar.reason.varlen`; the filler's hidden states are then zeros).
        """
        from echosonar.reason.llama_step import llama_shaped
        from echosonar.reason.varlen import packed_hidden

        b, p, _ = embeds.shape
        full = torch.cat([embeds, self.lm.get_input_embeddings()(ids)], 1)
        plen, tlen = pmask.sum(1), imask.sum(1)
        s = int((plen + tlen).max())
        ar = torch.arange(s, device=full.device)
        if self.varlen and llama_shaped(self.lm):
            hidden = packed_hidden(self.lm, full, torch.cat([pmask, imask], 1).bool())
        else:
            idx = (ar[None] + (p - plen)[:, None]).clamp(max=full.shape[1] - 1)
            x = full.gather(1, idx[..., None].expand(-1, -1, full.shape[-1]))
            hidden = self.lm.get_decoder()(inputs_embeds=x, position_ids=ar[None].expand(b, -1),
                                           use_cache=False).last_hidden_state
        return hidden, (ar[None] < plen[:, None]).long(), plen

    @staticmethod
    def _completion_hidden(hidden: Tensor, plen: Tensor, t: int) -> Tensor:
        """``[B, t, H]`` the packed pass's hidden states predicting completion tokens 0..t-1."""
        idx = (plen[:, None] - 1 + torch.arange(t, device=hidden.device)[None]).clamp(
            max=hidden.shape[1] - 1)
        return hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))

    def _completion_logits(self, hidden: Tensor, plen: Tensor, t: int) -> Tensor:
        """``[B, t, V]`` logits predicting completion tokens 0..t-1 from a packed pass."""
        return self.lm.get_output_embeddings()(self._completion_hidden(hidden, plen, t))

    def _packed_prompt(self, tok: Tensor, plen: Tensor, cite: Tensor, *more: Tensor
                       ) -> tuple[Tensor, ...]:
        """Left-padded prompt ids ``tok`` ``[B, P]``, its copy mask ``cite`` (and any ``more``
        per-token tensors of that layout) in the packed pass's order (row i's prompt at
        ``[0, plen_i)``): ``(ids, copyable, *more)``."""
        p = tok.shape[1]
        ar = torch.arange(p, device=tok.device)
        idx = (ar[None] + (p - plen)[:, None]).clamp(max=p - 1)
        live = ar[None] < plen[:, None]
        return (tok.gather(1, idx), live & cite.gather(1, idx), *(x.gather(1, idx) for x in more))

    def _number_tokens(self, tok: Tensor) -> Tensor:
        """``[B, P]`` bool: number tokens (digits only) -- never words, placeholders or
        special tokens."""
        if getattr(self, "_number_ids", None) is None or self._number_ids.device != tok.device:
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
            self._number_ids = torch.tensor([bool(t) and t.isdigit() for t in vocab],
                                            device=tok.device)
        known = tok.clamp(0, len(self._number_ids) - 1)
        return self._number_ids[known] & (tok < len(self._number_ids))

    def _completion_logprobs_packed(self, hidden: Tensor, plen: Tensor, t: int, tok: Tensor,
                                    cite: Tensor | None, with_copy: bool = False,
                                    comp: tuple[Tensor, Tensor] | None = None) -> Any:
        """``[B, t, V]`` scores predicting completion tokens 0..t-1 from a packed pass: the LM
        head's logits, or with a copy head the mixture's log-probabilities (``tok``/``cite``:
        the left-padded prompt ids and copy mask, whose rows sit at packed positions
        ``[0, plen)``). With ``lm.copy_answer`` the completion's own tokens are slots too
        (``comp``: its ids and mask ``[B, t]``; :mod:`~echosonar.reason.answer_copy`). With
        ``with_copy`` (copy head only) also the pointer's attention ``[B, t, P']``, its gate
        logits ``[B, t]`` and the slots ``(ids [B, P'], copyable [B, P'] or [B, t, P'],
        completion-slot mask [B, P'])``, ``P'`` = P prompt slots (+ K completion slots,
        ``answer_copy.completion_slots``)."""
        h = self._completion_hidden(hidden, plen, t)
        logits = self.lm.get_output_embeddings()(h)
        if self.copy_head is None:
            return logits
        p = tok.shape[1]
        ids, valid = self._packed_prompt(tok, plen, cite)
        keys = self.copy_head.keys(hidden[:, :p])
        own = torch.zeros_like(valid)
        if self.config.copy_answer:
            if comp is None:
                raise ValueError("lm.copy_answer: the completion's ids are needed")
            cids, cmask = comp[0][:, :t], comp[1][:, :t].bool()
            idx = (plen[:, None] + torch.arange(t, device=hidden.device)[None]).clamp(
                max=hidden.shape[1] - 1)  # the state after reading completion token j
            ch = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))
            rows, thinking = teacher_forced_sources(self._answer_sources(), cids, cmask)
            ck, cids, cvalid, real = completion_slots(self.copy_head.keys(ch), cids, rows)
            keys, ids = torch.cat([keys, ck], 1), torch.cat([ids, cids], 1)
            # the reasoning reads the prompt; after </think> the answer reads the reasoning
            think = thinking[:, :, None]  # [B, t, 1]
            valid = torch.cat([valid[:, None, :] & think, cvalid & ~think], 2)
            own = torch.cat([own, real], 1)
        out = self.copy_head.log_probs(h, logits, keys, ids, valid, with_copy)
        return (*out, (ids, valid, own)) if with_copy else out

    def _answer_sources(self) -> AnswerSources:
        """The rule that makes completion tokens slots (``lm.copy_answer_slots``), its
        vocabulary tables built once per model."""
        first = self.config.copy_answer_slots == "first"
        got = getattr(self, "_sources", None)
        if got is None or got.first_only != first or got.tracker.word.device != self.device:
            self._sources = AnswerSources(self.tokenizer, first, self.device)
        return self._sources

    def forward(self, batch: list[StudyFeatures], targets: list[str],
                finding_weight: float = 1.0, copy_weight: float = 0.0) -> dict[str, Tensor]:
        """Alias of :meth:`forward_sft` (so DDP can wrap the model)."""
        return self.forward_sft(batch, targets, finding_weight, copy_weight)

    def forward_sft(self, batch: list[StudyFeatures], targets: list[str],
                    finding_weight: float = 1.0, copy_weight: float = 0.0) -> dict[str, Tensor]:
        """Teacher-forced pass over prompt + target. ``finding_weight`` != 1 weights the CE of
        target tokens that state a finding (``reason.targets.decision_weights``);
        ``lm_loss_sum`` is then the weighted sum, still divided by the plain token count
        ``n_tokens``. ``copy_weight`` > 0 (copy head only) adds the pointer's own loss
        (``copy_head.pointer_nll``) to ``lm_loss_sum``. Each target is tokenised once
        (``reason.targets``).

        Returns a dict: ``loss`` (scalar: mean CE over target tokens + aux_weight x mean BCE),
        ``lm_loss``, ``aux_loss`` (means), ``lm_loss_sum``, ``aux_loss_sum`` and ``n_tokens``
        (for exact normalisation across micro-batches and DDP ranks), ``logits`` ``[B, T, V]``
        (position t predicts target token t), ``target_ids``/``target_mask`` ``[B, T]``,
        ``label_logits`` ``[B, L]``. Prompt positions never enter the LM loss; studies without
        labels give no aux loss.
        """
        embeds, pmask, ptok, pseg, pcite = self.prompt_inputs(batch)
        # each row's target is cut so that ITS prompt + target fit max_len (batch-independent)
        enc = encode_targets(self.tokenizer, targets,
                             (self.config.max_len - pmask.sum(1)).tolist(), self.eos_id,
                             self.pad_id)
        tgt, tmask = enc.ids.to(self.device), enc.mask.to(self.device)
        hidden, prompt_rows, plen = self._packed(embeds, pmask, tgt, tmask)
        copy_nll = None
        comp = (tgt, tmask)
        if self.copy_head is not None and copy_weight > 0:
            logits, attn, gate, (ids, copyable, own) = self._completion_logprobs_packed(
                hidden, plen, tgt.shape[1], ptok, pcite, with_copy=True, comp=comp)
            seg = self._packed_prompt(ptok, plen, pcite, pseg)[2]
            seg = torch.cat([seg, own[:, seg.shape[1]:].long() * SELF], 1)
            tseg = target_segments(enc, cites_only=self.config.copy_tokens == "evidence",
                                   answer=self.config.copy_answer)
            copy_nll = pointer_nll(attn, gate, tgt, tmask, tseg.to(tgt.device), ids, copyable,
                                   seg)
        else:
            logits = self._completion_logprobs_packed(hidden, plen, tgt.shape[1], ptok, pcite,
                                                      comp=comp)
        labels = tgt.masked_fill(tmask == 0, -100)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                             ignore_index=-100, reduction="none")
        if finding_weight != 1.0:
            ce = ce * decision_weights(enc, finding_weight).to(ce.device).flatten()
        lm_sum = ce.sum()
        if copy_nll is not None:  # normalised like the LM loss: per target token
            lm_sum = lm_sum + copy_weight * copy_nll
        n_tok = tmask.sum()
        label_logits = self._label_logits(self._pooled(hidden, prompt_rows, plen - 1), batch)
        have = [i for i, sf in enumerate(batch) if sf.labels is not None]
        if have:
            y = torch.tensor([[float(batch[i].labels.get(k, 0)) for k in LABEL_KEYS]
                              for i in have], device=label_logits.device)
            aux_sum = F.binary_cross_entropy_with_logits(label_logits[have], y, reduction="sum")
        else:
            aux_sum = label_logits.sum() * 0.0
        n_lab = max(1, len(have) * len(LABEL_KEYS))
        lm_loss = lm_sum / n_tok.clamp(min=1)
        aux_loss = aux_sum / n_lab
        return {"loss": lm_loss + self.config.aux_weight * aux_loss, "lm_loss": lm_loss,
                "aux_loss": aux_loss, "lm_loss_sum": lm_sum, "aux_loss_sum": aux_sum,
                "n_tokens": n_tok, "n_labelled": torch.tensor(len(have)), "logits": logits,
                "target_ids": tgt, "target_mask": tmask, "label_logits": label_logits}

    def label_scores(self, batch: list[StudyFeatures],
                     prompt: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``[B, len(taxonomy.LABELS)]`` probabilities (``LABEL_KEYS`` order), prompt only.
        ``prompt``: ``(final hidden states [B, P, H], mask [B, P])`` of ``batch``'s prompts when
        a pass over them has run (``decode.Prefill``); else one is run here."""
        if prompt is None:
            embeds, mask = self.prompt_embeds(batch)
            prompt = (self._hidden(embeds, mask), mask)
        return torch.sigmoid(self._label_logits(self._pooled(*prompt), batch))

    def completion_logprobs(self, batch: list[StudyFeatures], completion_ids: Tensor,
                            completion_mask: Tensor, temperature: float = 1.0,
                            with_entropy: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Per-token log-probs ``[B, T]`` of given completions (right-padded ids ``[B, T]``,
        mask ``[B, T]``; zeros where masked), logits divided by ``temperature``: with a copy
        head, of the mixture the decoding loop samples from. For GRPO; ``with_entropy`` also
        returns the per-token entropy ``[B, T]`` of that distribution (detached)."""
        embeds, pmask, ptok, _, pcite = self.prompt_inputs(batch)
        if completion_ids.shape[0] != embeds.shape[0]:  # G completions per study
            g = completion_ids.shape[0] // embeds.shape[0]
            embeds, pmask, ptok = (x.repeat_interleave(g, 0) for x in (embeds, pmask, ptok))
            pcite = None if pcite is None else pcite.repeat_interleave(g, 0)
        hidden, _, plen = self._packed(embeds, pmask, completion_ids, completion_mask.long())
        logits = self._completion_logprobs_packed(hidden, plen, completion_ids.shape[1],
                                                  ptok, pcite,
                                                  comp=(completion_ids, completion_mask)).float()
        logp = torch.log_softmax(logits / temperature, -1)
        lp = logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) * completion_mask
        if not with_entropy:
            return lp
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1) * completion_mask
        return lp, ent

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, batch: list[StudyFeatures], max_new_tokens: int = 512,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 num_samples: int = 1, generator: torch.Generator | None = None,
                 return_ids: bool = False, thresholds: dict[str, float] | None = None,
                 engine: str = "auto", return_scores: bool = False) -> Any:
        """Decode with a KV cache: the prompt is prefilled once and its cache repeated for the
        ``num_samples`` completions of each study. Greedy unless ``do_sample``.

        With ``thresholds`` (per-label, e.g. chosen on val) decoding is *guided*
        (:mod:`echosonar.reason.guided`): the skeleton of the format is forced and every
        ``findings:`` list is the label head's calls; greedy, one completion per study.

        ``engine`` picks the decode step (:func:`echosonar.reason.decode.make_step`: ``"auto"``
        the hand-written Llama step where it applies, ``"int8"`` the same over int8 matrices,
        ``"hf"`` the model's own forward).

        Returns ``[[text] * num_samples for each study]`` (text up to the first eos, special
        tokens removed, tags kept). With ``return_ids`` also ``(ids [B*G, T], mask [B*G, T])``
        where mask covers tokens up to and including the first eos. With ``return_scores``
        also the label scores ``[B, L]`` (:meth:`label_scores`) from the same prompt pass:
        ``(texts, [ids, mask,] scores)``.
        """
        if thresholds is not None and (do_sample or num_samples != 1 or return_ids):
            raise ValueError("guided decoding (thresholds=...) is greedy with one completion "
                             "per study and does not return ids")
        was_training = self.training
        self.eval()
        try:
            with _autocast(self.device):
                if thresholds is not None:
                    from echosonar.reason.guided import guided_generate

                    texts, _, scores = guided_generate(self, batch, thresholds, max_new_tokens,
                                                       engine)
                    out = [[t] for t in texts]
                    return (out, scores) if return_scores else out
                ids, mask, scores = self._decode(batch, max_new_tokens, do_sample, temperature,
                                                 top_p, num_samples, generator, engine,
                                                 return_scores)
        finally:
            self.train(was_training)
        texts = [self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
                 for row, m in zip(ids.cpu(), mask.cpu(), strict=True)]
        out = [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(batch))]
        res = (out, ids, mask) if return_ids else (out,)
        res += (scores,) if return_scores else ()
        return res if len(res) > 1 else out

    def decode_engine(self, batch: list[StudyFeatures], engine: Any = "auto",
                      hidden: Tensor | None = None, inputs: tuple | None = None) -> Any:
        """The decode step for ``batch`` (``decode.make_step``'s ``engine`` argument): ``engine``
        itself, or with a copy head a builder of :class:`~echosonar.reason.copy_head.CopyStep`
        over it (the prompt's keys come from its final hidden states: ``hidden`` ``[B, P, H]``
        when a pass over the prompt has run, ``decode.Prefill``, else one extra pass).
        ``inputs``: ``batch``'s :meth:`prompt_inputs` when the caller has them (else they are
        built here)."""
        if self.copy_head is None:
            return engine
        from echosonar.reason.copy_head import CopyStep
        from echosonar.reason.decode import make_step

        embeds, mask, tok, _, valid = self.prompt_inputs(batch) if inputs is None else inputs
        hidden = self._hidden(embeds, mask) if hidden is None else hidden
        keys = self.copy_head.keys(hidden)

        def build(lm: nn.Module) -> CopyStep:
            inner = make_step(lm, engine)
            inner.want_hidden = True
            step = CopyStep(inner, self.copy_head, keys, tok, valid, hidden[:, -1])
            if self.config.copy_answer:  # its rows (B x G) are set at prefill
                step.tracker = self._answer_sources().fresh()
            return step

        return build

    def decode_inputs(self, batch: list[StudyFeatures], engine: Any = "auto",
                      hidden: bool = False) -> tuple[Tensor, Tensor, Any, Any]:
        """One pass over ``batch``'s prompts for decoding (evaluation, guided decoding, GRPO
        rollouts): ``(embeds [B, P, H], mask [B, P], prefill, step)`` -- the
        :class:`~echosonar.reason.decode.Prefill` (cache, first logits, and the final hidden
        states when ``hidden`` asks for them for the label head or a copy head reads them) and
        the decode step over it (:meth:`decode_engine`), for ``decode.sample_completions``'s
        ``engine`` and ``prefilled``."""
        inputs = self.prompt_inputs(batch)
        embeds, mask = inputs[:2]
        pre = prefill_prompt(self.lm, embeds, mask, hidden=hidden or self.copy_head is not None)
        return embeds, mask, pre, self.decode_engine(batch, engine, pre.hidden, inputs)

    def _decode(self, batch, max_new_tokens, do_sample, temperature, top_p, g, generator,
                engine="auto", scores=False):
        # the one decoding loop of evaluation, analyze and GRPO (reason.decode)
        embeds, mask, pre, step = self.decode_inputs(batch, engine, hidden=scores)
        head = self.label_scores(batch, (pre.hidden, mask)) if scores else None
        budget = min(max_new_tokens, self.config.max_len - embeds.shape[1])
        if budget <= 0:
            empty = torch.zeros((len(batch) * g, 0), dtype=torch.long, device=embeds.device)
            return empty, empty.clone(), head
        ids, keep, _ = sample_completions(
            self.lm, embeds, mask, num_samples=g, max_new_tokens=budget,
            eos_token_id=self.eos_id, pad_token_id=self.pad_id, do_sample=do_sample,
            temperature=temperature, top_p=top_p, generator=generator, engine=step,
            prefilled=pre)
        return ids, keep, head

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: Any, meta: dict[str, Any] | None = None) -> Any:
        from echosonar.reason.checkpoint import save_echosonar_r

        return save_echosonar_r(self, directory, meta)

    @classmethod
    def from_pretrained(cls, directory: Any, map_location: str = "cpu") -> EchoSonarR:
        from echosonar.reason.checkpoint import load_echosonar_r

        return load_echosonar_r(directory, map_location)


def _cat(arrays: list) -> Any:
    import numpy as np

    return np.ascontiguousarray(np.concatenate(arrays, axis=0))


def _scatter(emb: Tensor, where: Tensor, values: Tensor, what: str) -> Tensor:
    if int(where.sum()) != values.shape[0]:
        raise RuntimeError(f"{what} placeholders ({int(where.sum())}) != feature rows "
                           f"({values.shape[0]}): the tokenizer split a placeholder")
    return emb.masked_scatter(where.unsqueeze(-1), values.to(emb.dtype))


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on CUDA, nothing elsewhere (fp32 on CPU)."""
    import contextlib

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(cfg: LMConfig, tokenizer: Any, feature_dims: dict[str, int]) -> EchoSonarR:
    """Factory. From scratch (``cfg.base_model`` empty): a Llama/Qwen2 decoder sized by ``cfg``
    over ``tokenizer``'s vocabulary. Else: the local HF model + its tokenizer (``tokenizer`` may
    be None) with EchoSonar tokens added and LoRA adapters (see :mod:`echosonar.reason.lora`)."""
    from echosonar.reason.lora import load_base_lm, scratch_lm

    if cfg.base_model:
        lm, tokenizer = load_base_lm(cfg, tokenizer)
    else:
        if tokenizer is None:
            raise ValueError("a from-scratch EchoSonar-R needs a tokenizer (train_tokenizer)")
        lm = scratch_lm(cfg, tokenizer)
    return EchoSonarR(cfg, tokenizer, lm, feature_dims)
