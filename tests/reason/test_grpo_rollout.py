"""Prefill-once rollouts match HF generate; completion masks come from the first EOS."""

import pytest
import torch

from echosonar.reason.grpo_toy import ToyPolicy, toy_studies
from echosonar.reason.rollout import (
    completion_logps,
    completion_mask_from_eos,
    decode_completions,
    rollout,
    sample_completions,
    selective_logps,
    top_p_filter,
)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    pol = ToyPolicy(seed=0).eval()
    studies = toy_studies(3, seed=3)
    studies[1].views = studies[1].views[:1]  # a shorter prompt: left padding is exercised
    with torch.no_grad():
        emb, mask = pol.prompt_embeds(studies)
    assert (mask == 0).any()
    return pol, studies, emb, mask


def _hf(pol, emb, mask, eos, **kw):
    with torch.no_grad():
        return pol.lm.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=14,
                               eos_token_id=eos, pad_token_id=pol.tokenizer.pad_token_id,
                               output_logits=True, return_dict_in_generate=True, top_k=0, **kw)


def test_greedy_identical_tokens_and_logits_at_every_step(setup):
    pol, _, emb, mask = setup
    pad = pol.tokenizer.pad_token_id
    free = _hf(pol, emb, mask, None, do_sample=False).sequences
    # make a token that row 0 emits mid-way the EOS, so early stopping and padding are compared
    eos = int(free[0, 5])
    ref = _hf(pol, emb, mask, eos, do_sample=False)
    ids, m, logits = sample_completions(pol.lm, emb, mask, num_samples=1, max_new_tokens=14,
                                        eos_token_id=eos, pad_token_id=pad, do_sample=False,
                                        return_logits=True)
    assert torch.equal(ids, ref.sequences)
    assert len(logits) == len(ref.logits)
    for a, b in zip(logits, ref.logits, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=1e-5)
    assert torch.equal(m, completion_mask_from_eos(ref.sequences, eos))


def test_sampling_matches_num_return_sequences_for_fixed_seed(setup):
    pol, _, emb, mask = setup
    g, pad = 4, pol.tokenizer.pad_token_id
    torch.manual_seed(7)
    ref = _hf(pol, emb, mask, None, do_sample=True, num_return_sequences=g, temperature=0.8,
              top_p=0.9)
    torch.manual_seed(7)
    ids, _, logits = sample_completions(pol.lm, emb, mask, num_samples=g, max_new_tokens=14,
                                        eos_token_id=None, pad_token_id=pad, temperature=0.8,
                                        top_p=0.9, return_logits=True)
    assert torch.equal(ids, ref.sequences)
    for a, b in zip(logits, ref.logits, strict=True):
        torch.testing.assert_close(a, b.float(), rtol=0, atol=1e-5)


def test_top_p_matches_hf_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    x = torch.randn(5, 40)
    for p in (0.3, 0.9):
        torch.testing.assert_close(top_p_filter(x, p), TopPLogitsWarper(p)(None, x.clone()))


@pytest.mark.parametrize("share", [True, False])
def test_training_logps_equal_sampling_logps(setup, share):
    pol, studies, _, _ = setup
    gen = torch.Generator().manual_seed(0)
    r = rollout(pol, studies, num_samples=3, max_new_tokens=10, temperature=0.7, generator=gen,
                return_logits=True)
    step = torch.stack(r.step_logits, 1)  # [N, T, V] raw logits seen while sampling
    want = selective_logps(step, r.completion_ids, 0.7)
    emb, mask = pol.prompt_embeds(studies)
    got, ent = completion_logps(pol.lm, emb, mask, r.completion_ids, r.completion_mask, 3, 0.7,
                                with_entropy=True, share_prompt=share)
    m = r.completion_mask.bool()
    torch.testing.assert_close(got[m], want[m], rtol=0, atol=1e-5)
    assert ent.shape == got.shape and bool((ent[m] > 0).all())


def test_shared_prompt_gradients_equal_full_sequence(setup):
    pol, studies, _, _ = setup
    r = rollout(pol, studies, num_samples=2, max_new_tokens=8,
                generator=torch.Generator().manual_seed(1))
    grads = []
    for share in (True, False):
        pol.zero_grad()
        emb, mask = pol.prompt_embeds(studies)
        lp, _ = completion_logps(pol.lm, emb, mask, r.completion_ids, r.completion_mask, 2,
                                 share_prompt=share)
        (lp * r.completion_mask).sum().backward()
        grads.append([p.grad.clone() for p in pol.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the projector (prompt side) gets gradient through the repeated KV cache
    names = [n for n, _ in pol.named_parameters()]
    assert grads[0][names.index("proj.weight")].abs().sum() > 0


def test_completion_mask_first_eos():
    eos, pad = 2, 0
    ids = torch.tensor([
        [2, 0, 0, 0, 0],  # EOS first
        [5, 6, 2, 0, 0],  # EOS in the middle
        [5, 6, 7, 8, 2],  # EOS last
        [5, 6, 7, 8, 9],  # no EOS: everything counts (truncated)
        [5, 0, 6, 2, 2],  # a pad id inside the text still counts; only the FIRST EOS ends it
    ])
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1],
                         [1, 1, 1, 1, 0]])
    assert torch.equal(completion_mask_from_eos(ids, eos), want)
    # pad == eos (common in HF tokenizers): the mask must still end at the first one
    same = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8]])
    assert completion_mask_from_eos(same, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert completion_mask_from_eos(ids, None).sum() == ids.numel()
    del pad


def test_rollout_texts_truncation_and_decode(setup):
    pol, studies, _, _ = setup
    tok = pol.tokenizer
    r = rollout(pol, studies, num_samples=2, max_new_tokens=6,
                generator=torch.Generator().manual_seed(0))
    assert r.completion_ids.shape[0] == len(studies) * 2 == len(r.texts)
    for row, m, text, tr in zip(r.completion_ids, r.completion_mask, r.texts, r.truncated,
                                strict=True):
        n = int(m.sum())
        body = row[:n - 1] if not tr else row[:n]
        assert text == tok.decode(body.tolist(), skip_special_tokens=False)
        assert bool(tr) == (tok.eos_token_id not in row.tolist())
    # decoding stops at the first EOS and keeps format tags (special or not)
    tag = tok.convert_tokens_to_ids("<think>")
    ids = torch.tensor([[tag, tok.eos_token_id, tag]])
    assert decode_completions(tok, ids, completion_mask_from_eos(ids, tok.eos_token_id),
                              tok.eos_token_id) == ["<think>"]
