"""EchoSonar-R checkpoints: ``model.safetensors`` + ``config.json`` (io.checkpoint format) +
``tokenizer.json`` (and the HF tokenizer config). Never pickle.

- From scratch: every tensor of the model (tied weights stored once); ``config.json`` meta holds
  the HF decoder config, so loading needs nothing but this folder.
- LoRA (``lm.base_model`` set): only the trainable tensors (adapters, added-token rows,
  projectors, label head); loading rebuilds the base from ``lm.base_model``, which must still
  exist, and refuses a checkpoint whose tensors do not all fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from echosonar.config.base import ConfigError, from_dict, to_dict
from echosonar.config.reason import LMConfig
from echosonar.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KIND = "echosonar_r"


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    # safetensors refuses tensors sharing memory (tied embedding / LM head): store them once.
    seen: dict[tuple, str] = {}
    out, tied = {}, {}
    for k, v in state.items():
        sig = (v.data_ptr(), v.shape, v.stride(), v.dtype)
        if v.numel() and sig in seen:
            tied[k] = seen[sig]
        else:
            seen[sig] = k
            out[k] = v
    return out, tied


def save_echosonar_r(model: Any, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``directory`` (created if needed); returns it."""
    directory = Path(directory)
    lora = bool(model.config.base_model)
    state = model.state_dict()
    if lora:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items()  # + the measurement head's statistics
                 if k in trainable or k.startswith("meas_head.")}
    tensors, tied = _dedupe(state)
    info = {"feature_dims": model.feature_dims, "tied": tied, "lora": lora, **(meta or {})}
    if not lora:
        d = model.lm.config.to_dict()
        info["lm_config"] = {k: d[k] for k in _HF_KEYS if k in d}
        info["lm_config"]["model_type"] = model.lm.config.model_type
    save_checkpoint(directory, tensors, KIND, to_dict(model.config), info)
    model.tokenizer.save_pretrained(str(directory))
    return directory


_HF_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
            "initializer_range", "tie_word_embeddings", "bos_token_id", "eos_token_id",
            "pad_token_id", "rope_parameters", "rms_norm_eps", "hidden_act")


def load_echosonar_r(directory: str | Path, map_location: str = "cpu") -> Any:
    """Rebuild an :class:`EchoSonarR` saved by :func:`save_echosonar_r`."""
    from echosonar.reason.lora import lm_from_config_dict, load_base_lm
    from echosonar.reason.model import EchoSonarR
    from echosonar.reason.tokenizer import TokenizerError, load_tokenizer

    directory = Path(directory)
    tensors, data = load_checkpoint(directory, KIND)
    # Models saved before the flags existed were trained on unflagged prompts.
    # ... and before the measurement head existed, without one; and without view segments.
    saved = {"measurement_flags": False, "measurement_head": False, "view_segments": False,
             "copy_head": False, "copy_follow": False, "copy_tokens": "numbers",
             "copy_answer": False,
             **data["config"]}
    try:
        cfg = from_dict(LMConfig, saved)
    except ConfigError as e:
        raise CheckpointError(f"{directory}: config does not fit LMConfig: {e}") from e
    meta = data.get("meta", {})
    try:
        tok = load_tokenizer(directory)
    except TokenizerError as e:
        raise CheckpointError(str(e)) from e
    if meta.get("lora"):
        lm, tok = load_base_lm(cfg, tok)
    else:
        if "lm_config" not in meta:
            raise CheckpointError(f"{directory}/config.json has no lm_config")
        lm = lm_from_config_dict(meta["lm_config"], cfg.attn_implementation)
    model = EchoSonarR(cfg, tok, lm, meta["feature_dims"])
    for k, src in meta.get("tied", {}).items():
        tensors.setdefault(k, tensors[src])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise CheckpointError(f"{directory}: tensors that fit no parameter: {unexpected[:5]}")
    if missing and not meta.get("lora"):
        raise CheckpointError(f"{directory}: missing tensors {missing[:5]}")
    if meta.get("lora"):
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        lost = sorted(trainable & set(missing))
        if lost:
            raise CheckpointError(f"{directory}: LoRA checkpoint lacks trainable tensors "
                                  f"{lost[:5]}")
    return model.to(map_location)
