"""One pass over the prompt serves the label head, the copy head's keys and the decoding
(decode.prefill_prompt / Prefill): the same scores and text as separate passes, one pass run;
``generate(return_scores=True)`` returns the scores of that pass (evaluate, analyze)."""

import pytest
import torch

from echosonar.reason import guided
from echosonar.reason.decode import prefill_prompt, sample_completions
from echosonar.reason.synthetic import tiny_setup
from echosonar.taxonomy import LABEL_KEYS


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "copy_head"])
def setup(request):
    studies, _, model = tiny_setup(n=4, seed=5, layers=2, copy_head=request.param)
    model.eval()
    if model.copy_head is not None:
        model.copy_head.gate.bias.data.fill_(0.0)  # make the copy path matter
    return studies, model


def _count_prompt_passes(model, fn, plen):
    """Run ``fn()``; return ``(its result, how many decoder passes read ``plen`` positions,
    the padded prompt's length)``."""
    calls = []
    hook = model.lm.get_decoder().register_forward_hook(
        lambda mod, args, kwargs, out: calls.append(out.last_hidden_state.shape[1]),
        with_kwargs=True)
    try:
        return fn(), sum(n == plen for n in calls)
    finally:
        hook.remove()


def test_prefill_hidden_gives_the_label_scores_of_a_separate_pass(setup):
    studies, model = setup
    batch = studies[:3]  # different view counts: left padding
    with torch.no_grad():
        embeds, mask = model.prompt_embeds(batch)
        assert not bool(mask.all())
        pre = prefill_prompt(model.lm, embeds, mask, hidden=True)
        shared = model.label_scores(batch, (pre.hidden, mask))
        own = model.label_scores(batch)
    assert torch.allclose(shared, own, atol=1e-6)


@pytest.mark.parametrize("engine", ["lean", "hf"])
def test_guided_and_free_decoding_run_one_prompt_pass(setup, engine):
    studies, model = setup
    batch = studies[:3]
    thr = {k: 0.5 for k in LABEL_KEYS}
    with torch.no_grad():
        plen = model.prompt_embeds(batch)[0].shape[1]
        texts, n = _count_prompt_passes(
            model, lambda: guided.guided_generate(model, batch, thr, 300, engine)[0], plen)
        assert n == 1  # was 2 (label head + prefill), 3 with a copy head
        # the same text as the separate passes gave: prefill again, label head on its own
        embeds, mask = model.prompt_embeds(batch)
        scores = model.label_scores(batch).tolist()
        called = [[k for k in guided.decisions(s, thr)
                   if guided.assessable(k, tuple(v.view for v in sf.views))]
                  for s, sf in zip(scores, batch, strict=True)]
        dec = guided.GuidedDecoder(model.tokenizer, [[v.view for v in sf.views] for sf in batch],
                                   called, [{v.view: dict(v.boxes) for v in sf.views}
                                            for sf in batch])
        ids, keep, _ = sample_completions(
            model.lm, embeds, mask, num_samples=1, max_new_tokens=300,
            eos_token_id=model.eos_id, pad_token_id=model.pad_id, do_sample=False, choose=dec,
            engine=model.decode_engine(batch, engine))
        again = [model.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True)
                 for r, m in zip(ids, keep, strict=True)]
        assert texts == again
        own = model.label_scores(batch)
        for thresholds in (None, thr):  # free and guided: text and label scores, one pass
            (texts, scores), n = _count_prompt_passes(
                model, lambda t=thresholds: model.generate(
                    batch, max_new_tokens=20, engine=engine, thresholds=t,
                    return_scores=True), plen)
            assert n == 1 and len(texts) == len(batch)
            assert torch.allclose(scores, own, atol=1e-6)


def test_grpo_rollouts_run_one_prompt_pass(setup):
    from echosonar.reason.rollout import rollout

    studies, model = setup
    batch = studies[:2]
    with torch.no_grad():
        plen = model.prompt_embeds(batch)[0].shape[1]
        out, n = _count_prompt_passes(
            model, lambda: rollout(model, batch, num_samples=3, max_new_tokens=8,
                                   generator=torch.Generator().manual_seed(0)), plen)
    assert n == 1 and out.completion_ids.shape[0] == 6  # was 2 with a copy head (its keys' own pass)
