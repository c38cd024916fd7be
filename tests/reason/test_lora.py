"""A local HF checkpoint (tiny random Llama saved to disk, no download) + PEFT LoRA."""

import pytest
import torch

from echosonar.config import load_config
from echosonar.reason.data import sft_target
from echosonar.reason.model import EchoSonarR
from echosonar.reason.sft import train_sft
from echosonar.reason.synthetic import synthetic_studies
from echosonar.reason.tokenizer import CLIP, TAG_TOKENS


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A 'pretrained' base: plain byte-level BPE (no EchoSonar tokens, no pad) + tiny Llama."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("base")
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    texts = [sft_target(sf) for sf in synthetic_studies(8, seed=9)]
    raw.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=2, max_position_embeddings=4096,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(str(d))
    return d


def test_lora_train_save_load(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    studies = synthetic_studies(4, seed=4, max_views=1, n_tokens=2)
    cfg = load_config(overrides=[
        f"lm.base_model={base_dir}", "lm.lora_r=4", "lm.lora_alpha=8", "lm.lora_dropout=0.0",
        "lm.max_len=4096", "sft.steps=3", "sft.batch_size=2", "sft.warmup=1", "sft.lr=1e-2",
        "sft.save_every=0", "sft.eval_every=0", "sft.sample_every=0", "sft.threads=1"])
    res = train_sft(cfg, None, tmp_path / "run", train=studies, val=[])
    model = res["model"]
    tok = model.tokenizer
    for t in (CLIP, *TAG_TOKENS):  # added to the base tokenizer, one id each
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert type(model.lm).__name__.startswith("Peft")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("clip_proj" in n for n in trainable)
    assert not any("base_layer" in n or "mlp" in n and "lora" not in n for n in trainable)
    # the added tokens' rows train in both the input embedding and the (untied) LM head
    assert {n.split(".")[-4] for n in trainable if "trainable_tokens" in n} == \
        {"embed_tokens", "lm_head"}
    # the frozen base is untouched, the adapters moved
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).state_dict()
    merged = model.lm.get_base_model().state_dict()
    q = "model.layers.0.self_attn.q_proj"
    assert torch.equal(merged[f"{q}.base_layer.weight"], base[f"{q}.weight"])
    assert merged[f"{q}.lora_B.default.weight"].abs().sum() > 0  # B starts at zero
    # save -> load: identical logits; the checkpoint holds no base weights
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "model" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("base_layer" in k for k in keys)
    again = EchoSonarR.from_pretrained(tmp_path / "run" / "model")
    targets = [sft_target(sf) for sf in studies[:2]]
    model.eval()
    with torch.no_grad():
        a = model.forward_sft(studies[:2], targets)
        b = again.forward_sft(studies[:2], targets)
    assert torch.equal(a["logits"], b["logits"])
    assert again.generate(studies[:1], max_new_tokens=5) == model.generate(studies[:1],
                                                                           max_new_tokens=5)
