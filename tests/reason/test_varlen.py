"""Teacher-forced passes over real tokens only (reason.varlen) equal the padded HF pass:
hidden states, SFT loss and gradients, GRPO log-probs; Llama, GQA and Qwen2 (biases)."""

import pytest
import torch

from echosonar.reason.data import sft_target
from echosonar.reason.synthetic import tiny_setup
from echosonar.reason.targets import encode_targets


@pytest.fixture(scope="module", params=[
    {}, {"kv_heads": 1}, {"arch": "qwen2"}], ids=["llama", "gqa", "qwen2"])
def setup(request):
    studies, _, model = tiny_setup(n=4, seed=7, layers=2, **request.param)
    return studies[:3], model


def _both(model, fn):
    out = {}
    for varlen in (True, False):
        model.varlen = varlen
        try:
            torch.manual_seed(0)
            out[varlen] = fn()
        finally:
            model.varlen = True
    return out[True], out[False]


def test_same_hidden_states_on_real_rows_and_zeros_after(setup):
    batch, model = setup
    model.eval()
    targets = [sft_target(sf) for sf in batch]

    def hidden():
        embeds, pmask = model.prompt_embeds(batch)
        enc = encode_targets(model.tokenizer, targets, 4096, model.eos_id, model.pad_id)
        tgt, tmask = enc.ids, enc.mask
        return model._packed(embeds, pmask, tgt, tmask), pmask.sum(1) + tmask.sum(1)

    with torch.no_grad():
        ((hv, rv, pv), lens), ((hh, rh, ph), _) = _both(model, hidden)
    assert len(set(lens.tolist())) > 1  # rows of different lengths: filler exists
    assert hv.shape == hh.shape and torch.equal(rv, rh) and torch.equal(pv, ph)
    for i, n in enumerate(lens.tolist()):
        assert torch.allclose(hv[i, :n], hh[i, :n], atol=2e-5), i
        assert not hv[i, n:].any()


def test_same_sft_loss_gradients_and_logprobs(setup):
    batch, model = setup
    model.train()
    targets = [sft_target(sf) for sf in batch]

    def loss_and_grads():
        model.zero_grad()
        out = model.forward_sft(batch, targets)
        out["loss"].backward()
        return out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                      if p.grad is not None}

    (lv, gv), (lh, gh) = _both(model, loss_and_grads)
    model.zero_grad()
    assert torch.allclose(lv, lh, rtol=1e-5)
    assert gv.keys() == gh.keys() and any("layers.1.self_attn" in n for n in gv)
    for n in gv:
        assert torch.allclose(gv[n], gh[n], rtol=1e-3, atol=1e-6), n
    enc = encode_targets(model.tokenizer, targets, 64, model.eos_id, model.pad_id)
    ids, mask = enc.ids, enc.mask

    def logprobs():
        with torch.no_grad():
            return model.completion_logprobs(batch, ids, mask, temperature=0.7)

    lpv, lph = _both(model, logprobs)
    assert torch.allclose(lpv, lph, atol=1e-5)
