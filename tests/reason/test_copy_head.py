"""The copy (pointer) head: a proper distribution, the same scores on the training and the
decoding paths (HF and hand-written steps), gradients reach it, and it learns to copy."""

import dataclasses

import pytest
import torch

from echosonar.reason.copy_head import CopyHead
from echosonar.reason.model import build_model
from echosonar.reason.synthetic import tiny_setup
from echosonar.reason.targets import encode_targets, target_segments
from echosonar.textformat import citation_spans


def test_mixture_is_a_distribution_that_moves_mass_to_prompt_tokens():
    torch.manual_seed(0)
    head = CopyHead(8, dim=4, gate_bias=0.0)
    h, logits = torch.randn(2, 3, 8), torch.randn(2, 3, 10)
    ids = torch.tensor([[4, 4, 7, 0], [1, 2, 3, 0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, False]])
    lp = head.log_probs(h, logits, head.keys(torch.randn(2, 4, 8)), ids, valid)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 3), atol=1e-5)
    gen = logits.log_softmax(-1)
    assert (lp[0, :, 4] > gen[0, :, 4] + torch.log(torch.tensor(0.5))).all()
    assert (lp[0, :, 0] < gen[0, :, 0]).all()  # token 0 sits only on an invalid slot
    head.gate.bias.data.fill_(-60.0)  # gate shut: exactly the LM
    lp = head.log_probs(h, logits, head.keys(torch.randn(2, 4, 8)), ids, valid)
    assert torch.allclose(lp, gen, atol=1e-5)


def _encode(model, text, n):
    return encode_targets(model.tokenizer, [text], n, model.eos_id, model.pad_id)


@pytest.fixture(scope="module")
def copy_setup():
    studies, tok, base = tiny_setup(n=6, seed=2, layers=2)
    cfg = dataclasses.replace(base.config, copy_head=True)
    torch.manual_seed(0)
    model = build_model(cfg, tok, base.feature_dims)
    model.copy_head.gate.bias.data.fill_(0.0)  # make the copy path matter in these checks
    return studies, model


def test_training_and_decoding_paths_score_the_same(copy_setup):
    studies, model = copy_setup
    batch = studies[:3]
    outs = {}
    for engine in ("hf", "auto"):
        texts, ids, mask = model.generate(batch, max_new_tokens=12, return_ids=True,
                                          engine=engine)
        outs[engine] = (texts, ids)
    assert outs["hf"][0] == outs["auto"][0]
    ids, mask = outs["hf"][1], (outs["hf"][1] != model.pad_id).long()
    lp = model.completion_logprobs(batch, ids, mask)
    # greedy picks each step's argmax of the mixture: every chosen token is the packed pass's
    # most likely one too, and its log-prob is finite
    from echosonar.reason.decode import sample_completions  # noqa: F401 (the loop under test)
    assert torch.isfinite(lp[mask.bool()]).all()
    emb, pm, ptok, _, pcite = model.prompt_inputs(batch)
    hidden, _, plen = model._packed(emb, pm, ids, mask)
    scores = model._completion_logprobs_packed(hidden, plen, ids.shape[1], ptok, pcite)
    assert torch.equal(scores.argmax(-1)[mask.bool()], ids[mask.bool()])


def test_sft_loss_reaches_the_copy_head(copy_setup):
    studies, model = copy_setup
    from echosonar.reason.data import sft_target

    out = model.forward_sft(studies[:2], [sft_target(sf, "copy") for sf in studies[:2]])
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for p in model.copy_head.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_sft_loss_under_bf16_autocast_keeps_the_pointer_in_fp32(copy_setup):
    # sft.precision=bf16 (and CUDA) run the step under autocast: the pointer's scores, gate and
    # mixture must still be fp32 -- a bf16 attention once broke the scatter into the vocabulary
    studies, model = copy_setup
    from echosonar.reason.data import sft_target

    tg = [sft_target(sf, "copy") for sf in studies[:2]]
    ref = model.forward_sft(studies[:2], tg)["loss"].detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_sft(studies[:2], tg)
    assert torch.isfinite(out["loss"]) and abs(out["loss"].item() - ref.item()) < 0.05 * ref.item()
    out["loss"].backward()
    assert model.copy_head.q.weight.grad.dtype == torch.float32
    assert model.copy_head.q.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_checkpoint_round_trip_keeps_the_copy_head(copy_setup, tmp_path):
    studies, model = copy_setup
    from echosonar.reason.model import EchoSonarR

    model.save_pretrained(tmp_path / "m")
    back = EchoSonarR.from_pretrained(tmp_path / "m")
    assert back.copy_head is not None
    a = model.generate(studies[:2], max_new_tokens=10)
    assert back.generate(studies[:2], max_new_tokens=10) == a


def test_pointer_loss_trains_the_pointer_even_with_the_gate_shut(copy_setup):
    studies, model = copy_setup
    from echosonar.reason.data import sft_target

    model.copy_head.gate.bias.data.fill_(-60.0)
    try:
        targets = [sft_target(sf, "copy") for sf in studies[:2]]
        model.forward_sft(studies[:2], targets)["loss"].backward()
        g = model.copy_head.q.weight.grad
        assert g is None or g.abs().max() < 1e-12  # the mixture alone: starved
        model.zero_grad(set_to_none=True)
        out = model.forward_sft(studies[:2], targets, copy_weight=1.0)
        out["loss"].backward()
        assert model.copy_head.q.weight.grad.abs().max() > 1e-6
    finally:
        model.copy_head.gate.bias.data.fill_(0.0)
        model.zero_grad(set_to_none=True)


def test_pointer_sources_are_the_cited_views_block(copy_setup):
    """Every box coordinate of the copy target has a source token in its own view's block of
    the prompt; the target's segments follow its reasoning lines."""
    studies, model = copy_setup
    from echosonar.reason.data import sft_target
    from echosonar.taxonomy import VIEWS

    sf = studies[0]
    text = sft_target(sf, "copy")
    ids = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    seg = target_segments(_encode(model, text, len(ids["input_ids"])))[0]
    first = text.split("\n")[1]  # the first view line (after <think>)
    view = first.split(":")[0][5:]
    j = next(i for i, (a, _) in enumerate(ids["offset_mapping"]) if a >= len("<think>\n") + 6)
    assert seg[j] == VIEWS.index(view) + 1
    assert seg[0] == 0  # the <think> tag
    _, pm, ptok, pseg, _ = model.prompt_inputs([sf])
    shown = {VIEWS[k - 1] for k in pseg[0].unique().tolist() if k > 0}
    assert shown == {v.view for v in sf.views if v.view in VIEWS}


def test_follow_bonus_is_the_same_in_training_and_decoding():
    """With ``copy_follow`` the pointer's bonus comes from its own earlier positions in a
    packed pass and from the decode step's history: greedy tokens agree with the packed
    pass's argmax, for both decode steps."""
    studies, tok, base = tiny_setup(n=4, seed=5, layers=2)
    cfg = dataclasses.replace(base.config, copy_head=True, copy_follow=True)
    torch.manual_seed(1)
    model = build_model(cfg, tok, base.feature_dims)
    model.copy_head.gate.bias.data.fill_(2.0)  # copy a lot, so the bonus decides tokens
    model.copy_head.follow.data.copy_(torch.tensor([1.5, 2.5]))
    batch = studies[:2]
    got = {e: model.generate(batch, max_new_tokens=10, return_ids=True, engine=e)
           for e in ("hf", "auto")}
    assert got["hf"][0] == got["auto"][0]
    ids = got["hf"][1]
    mask = (ids != model.pad_id).long()
    emb, pm, ptok, _, pcite = model.prompt_inputs(batch)
    hidden, _, plen = model._packed(emb, pm, ids, mask)
    scores = model._completion_logprobs_packed(hidden, plen, ids.shape[1], ptok, pcite)
    assert torch.equal(scores.argmax(-1)[mask.bool()], ids[mask.bool()])


def test_evidence_citations_have_a_source_in_their_views_block(copy_setup):
    """``lm.copy_tokens=evidence``: every token of an evidence target's citations (boxes and
    measurements, names included) has a copyable prompt token with its id in the cited
    view's block, so the pointer can read a whole citation off the prompt; words outside the
    citations (``findings``, the tags) get no copy supervision and placeholders are never
    copyable."""
    studies, model = copy_setup
    from echosonar.reason.data import sft_target

    assert model.config.copy_tokens == "evidence"
    for sf in studies[:3]:
        text = sft_target(sf, "evidence", flags=model.config.measurement_flags)
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        shape = (1, len(ids))
        enc = _encode(model, text, shape[1])
        seg = target_segments(enc, cites_only=True)[0]
        cite = seg > 0
        assert (seg[cite] == target_segments(enc)[0][cite]).all()
        _, _, ptok, pseg, pcite = model.prompt_inputs([sf])
        assert not pcite[0][(ptok[0] == model.clip_id) | (ptok[0] == model.struct_id)].any()
        assert cite.sum() > 0
        # a view without measurements says so in words ("no detector measurements"): only
        # citations the prompt prints verbatim must be copyable
        parts = model.prompt_parts(sf)
        shown = {parts.text[a:b] for a, b in parts.cite_spans}
        offs = model.tokenizer(text, add_special_tokens=False,
                               return_offsets_mapping=True)["offset_mapping"]
        verbatim = [(a, b) for a, b in citation_spans(text) if text[a:b] in shown]
        assert verbatim
        for j in cite.nonzero()[:, 0].tolist():
            if not any(offs[j][0] < b and offs[j][1] > a for a, b in verbatim):
                continue
            src = pcite[0] & (pseg[0] == seg[j]) & (ptok[0] == ids[j])
            assert src.any(), model.tokenizer.decode([ids[j]])
        words = model.tokenizer.convert_ids_to_tokens(ids)
        assert not any(cite[j] for j, w in enumerate(words) if "findings" in w)


def test_numbers_mode_copies_digit_tokens_only():
    studies, tok, base = tiny_setup(n=2, seed=3, layers=2)
    cfg = dataclasses.replace(base.config, copy_head=True, copy_tokens="numbers")
    model = build_model(cfg, tok, base.feature_dims)
    _, pm, ptok, _, pcite = model.prompt_inputs(studies[:1])
    words = model.tokenizer.convert_ids_to_tokens(ptok[0][pcite[0]].tolist())
    assert words and all(w.isdigit() for w in words)
    with pytest.raises(ValueError, match="copy_tokens"):
        build_model(dataclasses.replace(cfg, copy_tokens="names"), tok, base.feature_dims)


def test_grpo_scores_the_mixture_the_rollouts_sample_and_trains_the_pointer(copy_setup):
    # GRPO's ratio and gradient must be taken under the distribution the rollouts sampled: with
    # a copy head, the mixture (its step log-probs), not the generator's logits alone
    studies, model = copy_setup
    from echosonar.reason.grpo import policy_logps
    from echosonar.reason.rollout import completion_logps, rollout

    batch = studies[:2]
    r = rollout(model, batch, num_samples=2, max_new_tokens=8, temperature=1.0,
                generator=torch.Generator().manual_seed(0), return_logits=True)
    lp, ent = policy_logps(model, batch, r.completion_ids, r.completion_mask, 2, 1.0, True)
    m = r.completion_mask.bool()
    sampled = torch.stack(r.step_logits, 1).float().log_softmax(-1)  # [N, T, V]
    sampled = sampled.gather(-1, r.completion_ids[:, :sampled.shape[1], None])[..., 0]
    torch.testing.assert_close(lp[m], sampled[m], rtol=0, atol=2e-4)
    with torch.no_grad():
        emb, pm = model.prompt_embeds(batch)
        gen, _ = completion_logps(model.lm, emb, pm, r.completion_ids, r.completion_mask, 2, 1.0)
    assert (lp[m] - gen[m]).abs().max() > 1e-2  # the generator alone is another distribution
    assert ent is not None and torch.isfinite(ent[m]).all() and (ent[m] >= 0).all()
    (-lp[m].sum()).backward()
    assert model.copy_head.gate.weight.grad.abs().sum() > 0
    assert model.copy_head.q.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
