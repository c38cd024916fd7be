"""A tiny policy that satisfies :class:`echosonar.reason.rollout.GRPOPolicy`.

Used by the GRPO tests, the GRPO benchmark and as a reference for porting the loop to another
model: a character-level tokenizer (format tags are single tokens), a small
``LlamaForCausalLM`` and one linear projector from per-view global clip tokens to prompt
embeddings. Nothing here is used by the real pipeline, which trains ``reason.model.EchoSonarR``.
"""

from __future__ import annotations

import string
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.textformat import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


def char_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over printable ASCII characters, one token each, plus
    ``<pad>``, ``</s>`` (eos), ``<unk>`` and the four format tags as single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\r\x0b\x0c\t"))
    vocab = {t: i for i, t in enumerate([PAD, EOS, UNK, THINK_OPEN, THINK_CLOSE, ANSWER_OPEN,
                                         ANSWER_CLOSE, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([PAD, EOS, UNK])
    tok.add_tokens([THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   unk_token=UNK)


class ToyPolicy(nn.Module):
    """Prompt = one projected token per view (its global clip token) after a learned start
    token. ``prompt_embeds`` LEFT-pads, as ``EchoSonarR`` does."""

    checkpoint_kind = "grpo_toy"

    def __init__(self, feature_dim: int = 8, hidden: int = 32, layers: int = 2,
                 heads: int = 4, seed: int = 0) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.tokenizer = char_tokenizer()
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(self.tokenizer), hidden_size=hidden,
                          intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=4096, bos_token_id=None,
                          eos_token_id=self.tokenizer.eos_token_id,
                          pad_token_id=self.tokenizer.pad_token_id)
        self.lm = LlamaForCausalLM(cfg)
        self.proj = nn.Linear(feature_dim, hidden)
        self.start = nn.Parameter(torch.randn(hidden) * 0.02)
        self.feature_dim = feature_dim

    @property
    def device(self) -> torch.device:
        return self.start.device

    def prompt_embeds(self, batch: list[StudyFeatures]) -> tuple[Tensor, Tensor]:
        """``[B, P, H]`` LEFT-padded embeddings and ``[B, P]`` mask; P = 1 + max views."""
        rows = [torch.as_tensor(np.stack([v.clip_tokens[0] for v in sf.views]),
                                dtype=torch.float32, device=self.device) for sf in batch]
        p = 1 + max(r.shape[0] for r in rows)
        h = self.start.shape[0]
        out, mask = [], torch.zeros(len(batch), p, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            seq = torch.cat([self.start[None], self.proj(r)], 0)
            pad = torch.zeros(p - seq.shape[0], h, device=self.device)
            out.append(torch.cat([pad, seq], 0))
            mask[i, p - seq.shape[0]:] = 1
        return torch.stack(out), mask

    def save_pretrained(self, directory: Any, meta: dict[str, Any] | None = None) -> Any:
        from echosonar.io.checkpoint import save_checkpoint

        return save_checkpoint(directory, dict(self.state_dict()), self.checkpoint_kind,
                               {"feature_dim": self.feature_dim}, meta)


def toy_studies(n: int, feature_dim: int = 8, views: int = 2, seed: int = 0,
                labels: bool = True) -> list[StudyFeatures]:
    """``n`` random studies with ``views`` views each (clip tokens ``[3, feature_dim]``, no
    structure detections), each labelled ``healthy`` unless ``labels`` is False."""
    from echosonar.taxonomy import LABEL_KEYS, REPORT_SECTIONS, STRUCTURES, VIEWS

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        vs = [ViewFeatures(view=VIEWS[j % len(VIEWS)],
                           clip_tokens=rng.standard_normal((3, feature_dim)).astype(np.float32),
                           structure_tokens=np.zeros((len(STRUCTURES), 4), np.float32),
                           structure_scores=np.zeros(len(STRUCTURES), np.float32))
              for j in range(views)]
        lab = {k: int(k == "healthy") for k in LABEL_KEYS} if labels else None
        out.append(StudyFeatures(key=f"toy{i:04d}", views=vs, labels=lab, split="train",
                                 report={s: "Normal" for s in REPORT_SECTIONS}))
    return out
