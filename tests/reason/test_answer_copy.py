"""``lm.copy_answer``: the pointer reads the completion's own reasoning findings. The copyable
tokens are exactly the reasoning lines' finding names; the decoding loop (growing its slots as it
reads) scores a completion exactly as the teacher-forced pass does; every answer finding the
reasoning concluded has a source there."""

import dataclasses

import pytest
import torch

from echosonar.reason.answer_copy import (
    SELF,
    AnswerSources,
    answer_finding_spans,
    teacher_forced_sources,
)
from echosonar.reason.data import sft_target
from echosonar.reason.decode import sample_completions
from echosonar.reason.model import build_model
from echosonar.reason.synthetic import tiny_setup
from echosonar.reason.targets import encode_targets, target_segments
from echosonar.textformat import parse_generation


@pytest.fixture(scope="module", params=["mentions", "first"])
def setup(request):
    studies, tok, base = tiny_setup(n=6, seed=4, layers=2)
    cfg = dataclasses.replace(base.config, copy_head=True, copy_follow=True, copy_answer=True,
                              copy_answer_slots=request.param)
    torch.manual_seed(0)
    model = build_model(cfg, tok, base.feature_dims)
    model.copy_head.gate.bias.data.fill_(1.0)  # copy a lot, so the pointer decides scores
    model.copy_head.follow.data.copy_(torch.tensor([1.0, 2.0]))
    return studies, model


def _sick(studies):
    """Targets (evidence writer) whose reasoning concludes at least one finding."""
    out = []
    for sf in studies:
        text = sft_target(sf, "evidence", flags=True)
        if parse_generation(text).reasoning_findings:
            out.append((sf, text))
    assert out, "the synthetic studies should include a sick one"
    return out


def test_tracker_marks_exactly_the_reasoning_finding_names(setup):
    studies, model = setup
    for _, text in _sick(studies):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        t = torch.tensor([ids])
        rows, _ = teacher_forced_sources(AnswerSources(model.tokenizer, False), t,
                                         torch.ones_like(t))
        marked = " ".join(model.tokenizer.decode([ids[p]]).strip() for p, _ in rows[0])
        names = " ".join(n for v in parse_generation(text).views.values() for n in v.findings)
        assert marked.split() == names.split()


def test_answer_spans_and_segments(setup):
    studies, model = setup
    sf, text = _sick(studies)[0]
    (a, b), = answer_finding_spans(text)
    from echosonar.taxonomy import FINDING_BY_NAME
    assert {FINDING_BY_NAME[n].key for n in text[a:b].split("; ")} == \
        parse_generation(text).findings
    enc = encode_targets(model.tokenizer, [text], 4096, model.eos_id, model.pad_id)
    seg = target_segments(enc, answer=True)[0]
    on = [enc.offsets[0][j] for j in (seg == SELF).nonzero()[:, 0].tolist()]
    assert on and all(x < b and y > a for x, y in on)
    assert not (target_segments(enc)[0] == SELF).any()


@pytest.mark.parametrize("engine", ["hf", "auto"])
def test_decoding_scores_a_completion_as_the_teacher_forced_pass_does(setup, engine):
    studies, model = setup
    pairs = _sick(studies)[:2]
    batch = [sf for sf, _ in pairs]
    enc = encode_targets(model.tokenizer, [t for _, t in pairs], 4096, model.eos_id, model.pad_id)
    ids, mask = enc.ids, enc.mask
    col = iter(range(ids.shape[1]))

    def force(logits):  # feed the target one token a step (each gets its own slot and key)
        return ids[:, next(col)]

    with torch.no_grad():
        embeds, pm, pre, step = model.decode_inputs(batch, engine)
        out, _, steps = sample_completions(
            model.lm, embeds, pm, num_samples=1, max_new_tokens=ids.shape[1],
            eos_token_id=None, pad_token_id=model.pad_id, choose=force, engine=step,
            prefilled=pre, return_logits=True)
        assert torch.equal(out, ids)
        dec = torch.stack(steps, 1).log_softmax(-1).gather(-1, ids[..., None])[..., 0]
        tf = model.completion_logprobs(batch, ids, mask)
    m = mask.bool()
    torch.testing.assert_close(tf[m], dec[m], rtol=0, atol=2e-4)
    # the answer's names are where the reasoning's findings matter: there the scores differ
    # from a model that cannot read its own completion
    plain = dataclasses.replace(model.config, copy_answer=False)
    model.config = plain
    try:
        other = model.completion_logprobs(batch, ids, mask)
    finally:
        model.config = dataclasses.replace(plain, copy_answer=True)
    seg = target_segments(enc, answer=True)
    assert (tf - other)[seg == SELF].abs().max() > 1e-3
    assert torch.allclose(tf[m & (seg != SELF)][:20], other[m & (seg != SELF)][:20], atol=1e-5)


def test_first_mentions_are_each_finding_once_readable_after_its_item():
    studies, tok, _ = tiny_setup(n=6, seed=4, layers=1)
    _, text = _sick(studies)[0]
    # the same finding named in two lines: one slot run, readable after its first item ends
    a4c = ("view A4C: structures none. evidence: e. findings: LA enlargement, RA enlargement. "
           "implication: i.")
    a2c = "view A2C: structures none. evidence: e. findings: LA enlargement. implication: i."
    text = "<think>\n" + a4c + "\n" + a2c + "\n</think>\n<answer>\nfindings: LA enlargement"
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    (rows,), thinking = teacher_forced_sources(AnswerSources(tok, True), ids,
                                               torch.ones_like(ids))
    words = [tok.decode([int(ids[0, p])]).strip() for p, _ in rows]
    assert words == ["LA", "enlargement", "RA", "enlargement"]
    first_end = text.index(", RA")  # the comma ends the first item
    comma = next(j for j in range(ids.shape[1])
                 if tok.decode(ids[0, :j + 1].tolist()).endswith(text[:first_end + 1]))
    assert rows[0][1] == rows[1][1] == comma + 1
    close = int((ids[0] == tok.convert_tokens_to_ids("</think>")).nonzero()[0, 0])
    assert thinking[0, :close + 1].all() and not thinking[0, close + 1:].any()
    (every,), _ = teacher_forced_sources(AnswerSources(tok, False), ids, torch.ones_like(ids))
    assert len(every) == 6 and all(a == p + 1 for p, a in every)


def test_answer_names_read_the_reasoning_and_train_the_pointer(setup):
    studies, model = setup
    pairs = _sick(studies)[:2]
    batch, targets = [sf for sf, _ in pairs], [t for _, t in pairs]
    model.zero_grad(set_to_none=True)
    out = model.forward_sft(batch, targets, copy_weight=1.0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.copy_head.k.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    # the supervision: each answer name token of a concluded finding has a readable
    # completion slot with its id (the slots the pointer loss points at)
    enc = encode_targets(model.tokenizer, targets, 4096, model.eos_id, model.pad_id)
    emb, pm, ptok, _, pcite = model.prompt_inputs(batch)
    with torch.no_grad():
        hidden, _, plen = model._packed(emb, pm, enc.ids, enc.mask)
        *_, (ids, copyable, own) = model._completion_logprobs_packed(
            hidden, plen, enc.ids.shape[1], ptok, pcite, with_copy=True,
            comp=(enc.ids, enc.mask))
    seg = target_segments(enc, answer=True)
    checked = 0
    for i, text in enumerate(targets):
        names = [n for v in parse_generation(text).views.values() for n in v.findings]
        for j in (seg[i] == SELF).nonzero()[:, 0].tolist():
            word = model.tokenizer.decode([enc.ids[i, j]]).strip()
            if word in (";", "") or not any(word in n.split() for n in names):
                continue
            src = copyable[i, j] & own[i] & (ids[i] == enc.ids[i, j])
            assert src.any(), word
            assert not (copyable[i, j] & ~own[i]).any()  # the answer never reads the prompt
            checked += 1
    assert checked


def test_an_answer_with_nothing_to_read_is_the_generators(setup):
    """A reasoning that concludes nothing leaves the answer no slot (the prompt's citations are
    the reasoning's to read, not the answer's): there the gate is shut and the mixture is the
    generator's distribution, still summing to one."""
    studies, model = setup
    from echosonar.taxonomy import LABEL_KEYS

    sf = dataclasses.replace(studies[0], labels={k: int(k == "healthy") for k in LABEL_KEYS})
    text = sft_target(sf, "evidence", flags=False)
    assert not parse_generation(text).reasoning_findings
    enc = encode_targets(model.tokenizer, [text], 4096, model.eos_id, model.pad_id)
    ids, mask = enc.ids, enc.mask
    emb, pm, ptok, _, pcite = model.prompt_inputs([sf])
    with torch.no_grad():
        hidden, _, plen = model._packed(emb, pm, ids, mask)
        lp = model._completion_logprobs_packed(hidden, plen, ids.shape[1], ptok, pcite,
                                               comp=(ids, mask))
        gen = model._completion_logits(hidden, plen, ids.shape[1]).float().log_softmax(-1)
    close = model.tokenizer.convert_tokens_to_ids("</think>")
    after = int((ids[0] == close).nonzero()[0, 0]) + 1
    torch.testing.assert_close(lp[0, after:], gen[0, after:], rtol=0, atol=1e-5)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(lp.shape[:2]), atol=1e-4)
    assert (lp[0, :after] - gen[0, :after]).abs().max() > 1e-3  # the reasoning still copies
