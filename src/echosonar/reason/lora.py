"""Building the LM inside EchoSonar-R: a from-scratch Llama/Qwen2, or a local HF model + LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echosonar.config.reason import LMConfig
from echosonar.reason.tokenizer import add_echosonar_tokens


def lm_config_dict(cfg: LMConfig, tokenizer: Any) -> dict[str, Any]:
    """The HF config (as a dict with ``model_type``) of a from-scratch decoder."""
    if cfg.arch not in ("llama", "qwen2"):
        raise ValueError(f"lm.arch must be 'llama' or 'qwen2', got {cfg.arch!r}")
    if cfg.hidden_size % cfg.heads:
        raise ValueError(f"lm.hidden_size {cfg.hidden_size} is not divisible by lm.heads "
                         f"{cfg.heads}")
    inter = cfg.intermediate_size or -(-int(8 * cfg.hidden_size / 3) // 64) * 64
    d = {"model_type": cfg.arch, "vocab_size": len(tokenizer), "hidden_size": cfg.hidden_size,
         "intermediate_size": inter, "num_hidden_layers": cfg.layers,
         "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.kv_heads or cfg.heads,
         "max_position_embeddings": cfg.max_len, "initializer_range": cfg.init_std,
         "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": tokenizer.bos_token_id,
         "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
         "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta}}
    return d


def lm_from_config_dict(d: dict[str, Any], attn_implementation: str = "sdpa") -> Any:
    """Instantiate a randomly initialised ``...ForCausalLM`` from :func:`lm_config_dict`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = dict(d)
    hf_cfg = AutoConfig.for_model(d.pop("model_type"), **d)
    return AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=attn_implementation)


def scratch_lm(cfg: LMConfig, tokenizer: Any) -> Any:
    return lm_from_config_dict(lm_config_dict(cfg, tokenizer), cfg.attn_implementation)


def load_base_lm(cfg: LMConfig, tokenizer: Any | None = None) -> tuple[Any, Any]:
    """Load ``cfg.base_model`` (a local HF causal-LM folder; safetensors only, nothing is
    downloaded) and its tokenizer, add the EchoSonar tokens, resize the embeddings and wrap the
    model with PEFT LoRA. The rows of the added tokens train too (PEFT trainable tokens);
    everything else of the base stays frozen. Returns ``(peft_model, tokenizer)``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(cfg.base_model)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"lm.base_model {base} is not a local HF model folder "
                                "(no config.json)")
    base_tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    before = len(base_tok)  # ids >= before are EchoSonar's additions (also when reloading)
    tokenizer = tokenizer if tokenizer is not None else base_tok
    add_echosonar_tokens(tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True,
                                              use_safetensors=True, dtype=torch.float32,
                                              attn_implementation=cfg.attn_implementation)
    n_rows = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > n_rows:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = list(range(before, len(tokenizer)))
    targets: list[int] | dict[str, list[int]] | None = None
    if new_ids:
        # New rows start at the mean of the pretrained rows — deterministic, so a LoRA
        # checkpoint (which stores only the trained deltas) reloads to identical logits.
        emb_in, emb_out = lm.get_input_embeddings(), lm.get_output_embeddings()
        with torch.no_grad():
            for w in {id(m.weight): m.weight for m in (emb_in, emb_out) if m is not None}.values():
                w[before:len(tokenizer)] = w[:before].mean(0)
        tied = emb_out is None or emb_out.weight is emb_in.weight
        names = {id(m): n.rsplit(".", 1)[-1] for n, m in lm.named_modules()}
        # the added tokens' input AND output rows train (the model must emit <think> etc.)
        targets = new_ids if tied else {names[id(emb_in)]: new_ids,
                                         names[id(emb_out)]: new_ids}
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM",
                      trainable_token_indices=targets)
    return get_peft_model(lm, lcfg), tokenizer
