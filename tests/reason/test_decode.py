"""The one decoding loop (reason.decode): the hand-written Llama step reproduces transformers
token for token, with left padding, EOS, GQA, biases, LoRA, shared-prompt groups; anything else
falls back to the model's own forward through the same loop."""

import pytest
import torch

from echosonar.reason.decode import HFStep, make_step, sample_completions
from echosonar.reason.llama_step import LlamaStep, llama_shaped

PAD = 0


def tiny(kind: str = "llama", **kw):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4,
                                          n_positions=256, bos_token_id=None,
                                          eos_token_id=None, pad_token_id=PAD)).eval()
    c = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=256, initializer_range=0.1,
             bos_token_id=None, eos_token_id=None, pad_token_id=PAD)
    c.update(kw)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**c)).eval()
    return LlamaForCausalLM(LlamaConfig(**c)).eval()


def prompts(lm, pads=(0, 3, 7), p: int = 12):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(len(pads), p, lm.config.hidden_size, generator=g) * 0.5
    mask = torch.ones(len(pads), p, dtype=torch.long)
    for i, n in enumerate(pads):
        mask[i, :n] = 0
    return emb, mask


def hf_generate(lm, emb, mask, new, eos, **kw):
    with torch.no_grad():
        return lm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=new,
                           eos_token_id=eos, pad_token_id=PAD, output_logits=True,
                           return_dict_in_generate=True, top_k=0, **kw)


MODELS = {
    "llama": dict(),
    "llama-gqa-bias-untied": dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True,
                                  tie_word_embeddings=False),
    "llama-tied-llama3-rope": dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2-gqa": dict(num_key_value_heads=1),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_token_identical_to_transformers(name):
    lm = tiny("qwen2" if name.startswith("qwen2") else "llama", **MODELS[name])
    assert llama_shaped(lm) and isinstance(make_step(lm), LlamaStep)
    emb, mask = prompts(lm)
    free = hf_generate(lm, emb, mask, 16, None, do_sample=False).sequences
    eos = int(free[1, 6])  # row 1 stops mid-way: per-row EOS and padding are compared too
    ref = hf_generate(lm, emb, mask, 16, eos, do_sample=False)
    ids, m, logits = sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=16,
                                        eos_token_id=eos, pad_token_id=PAD, do_sample=False,
                                        return_logits=True)
    assert torch.equal(ids, ref.sequences)
    for a, b in zip(logits, ref.logits, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=1e-4)
    first = int((ref.sequences[1] == eos).int().argmax())
    assert m[1].sum() == first + 1 <= 7 and (ids[1, first + 1:] == PAD).all()


def test_sampling_same_draws_as_transformers_and_between_engines():
    lm = tiny()
    emb, mask = prompts(lm, pads=(0, 4))
    torch.manual_seed(3)
    ref = hf_generate(lm, emb, mask, 10, None, do_sample=True, num_return_sequences=3,
                      temperature=0.7, top_p=0.9).sequences
    out = {}
    for engine in ("lean", "hf"):
        torch.manual_seed(3)  # HF draws from the global generator: so does the loop here
        out[engine], _, _ = sample_completions(lm, emb, mask, num_samples=3, max_new_tokens=10,
                                               eos_token_id=None, pad_token_id=PAD,
                                               temperature=0.7, top_p=0.9, engine=engine)
    assert torch.equal(out["lean"], ref) and torch.equal(out["hf"], ref)


def test_first_token_distribution_matches_softmax():
    lm = tiny()
    emb, mask = prompts(lm, pads=(2,))
    n = 4000
    gen = torch.Generator().manual_seed(0)
    ids, _, logits = sample_completions(lm, emb, mask, num_samples=n, max_new_tokens=2,
                                        eos_token_id=None, pad_token_id=PAD, temperature=1.3,
                                        generator=gen, return_logits=True)
    want = torch.softmax(logits[0][0] / 1.3, -1)
    freq = torch.bincount(ids[:, 0], minlength=want.numel()).float() / n
    assert (freq - want).abs().max() < 4 * (want.max() / n) ** 0.5 + 1e-3


def test_group_prefills_once_and_repeats_the_cache():
    lm = tiny(num_key_value_heads=2)
    emb, mask = prompts(lm)
    calls = []
    hook = lm.register_forward_hook(lambda mod, args, kw_out: calls.append(1))
    try:
        ids, _, _ = sample_completions(lm, emb, mask, num_samples=4, max_new_tokens=9,
                                       eos_token_id=None, pad_token_id=PAD, do_sample=False)
    finally:
        hook.remove()
    assert len(calls) == 1  # the prefill; every token after it is LlamaStep's
    one, _, _ = sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=9,
                                   eos_token_id=None, pad_token_id=PAD, do_sample=False)
    assert torch.equal(ids, one.repeat_interleave(4, 0))  # row b*G+j is study b


def test_lora_wrapped_llama_reads_effective_weights():
    from peft import LoraConfig, get_peft_model

    lm = tiny(tie_word_embeddings=False)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False, trainable_token_indices={"embed_tokens": [5, 6],
                                                                       "lm_head": [5, 6]})
    peft = get_peft_model(lm, cfg).eval()
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "trainable_tokens_delta" in n:
                p.normal_(0, 1.0)
    assert llama_shaped(peft)
    emb, mask = prompts(lm)
    out = [sample_completions(peft, emb, mask, num_samples=2, max_new_tokens=12,
                              eos_token_id=None, pad_token_id=PAD, do_sample=False,
                              return_logits=True, engine=e) for e in ("lean", "hf")]
    assert torch.equal(out[0][0], out[1][0])
    for a, b in zip(out[0][2], out[1][2], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_not_llama_shaped_falls_back_to_the_model_forward():
    lm = tiny("gpt2")
    assert not llama_shaped(lm) and isinstance(make_step(lm), HFStep)
    with pytest.raises(ValueError, match="not Llama-shaped"):
        make_step(lm, "lean")
    emb, mask = prompts(lm)
    ref = hf_generate(lm, emb, mask, 8, None, do_sample=False).sequences
    ids, _, _ = sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=8,
                                   eos_token_id=None, pad_token_id=PAD, do_sample=False)
    assert torch.equal(ids, ref)


def test_sliding_window_qwen2_is_not_llama_shaped():
    lm = tiny("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=0)
    assert not llama_shaped(lm)


@pytest.mark.parametrize("engine", ["lean", "hf"])
def test_forced_runs_in_one_step_equal_token_by_token(engine):
    lm = tiny(num_key_value_heads=2)
    emb, mask = prompts(lm)
    script = torch.randint(1, 97, (3, 14), generator=torch.Generator().manual_seed(5))
    eos = int(script[2, 8])
    script[2, 8] = eos  # row 2 ends inside the second run; its later tokens become padding

    def controller(sizes):
        seen, pos = [], [0]

        def choose(logits):
            seen.append(logits.clone())
            k = sizes[len(seen) - 1]
            out = script[:, pos[0]:pos[0] + k]
            pos[0] += k
            return out
        return choose, seen

    runs, seen_runs = controller([1, 4, 6, 1, 2])
    ones, seen_ones = controller([1] * 14)
    a, ma, _ = sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=14,
                                  eos_token_id=eos, pad_token_id=PAD, choose=runs, engine=engine)
    b, mb, _ = sample_completions(lm, emb, mask, num_samples=1, max_new_tokens=14,
                                  eos_token_id=eos, pad_token_id=PAD, choose=ones, engine="hf")
    assert torch.equal(a, b) and torch.equal(ma, mb)
    first = int((script[2] == eos).int().argmax())
    assert (a[2, first + 1:] == PAD).all() and a[2, first] == eos
    # the logits after each run are those after its last token, fed one at a time
    for i, j in enumerate([0, 1, 5, 11, 12]):
        torch.testing.assert_close(seen_runs[i], seen_ones[j], rtol=0, atol=1e-4)


def test_int8_option_decodes_close_to_fp32():
    lm = tiny(num_key_value_heads=2, hidden_size=64, intermediate_size=128)
    emb, mask = prompts(lm)
    out = {e: sample_completions(lm, emb, mask, num_samples=2, max_new_tokens=6,
                                 eos_token_id=None, pad_token_id=PAD, do_sample=False,
                                 return_logits=True, engine=e) for e in ("lean", "int8")}
    assert out["int8"][0].shape == out["lean"][0].shape
    a, b = out["lean"][2][1], out["int8"][2][1]  # the first logits from the decode step
    assert not torch.equal(a, b)  # int8 matrices really are used ...
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99  # ... closely
