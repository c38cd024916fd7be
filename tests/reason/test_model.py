"""EchoSonarR: loss masking, batch independence, generation, label scores, save/load."""

import json

import pytest
import torch
import torch.nn.functional as F

from echosonar.io.checkpoint import CheckpointError
from echosonar.reason.data import sft_target
from echosonar.reason.model import EchoSonarR, position_ids_from_mask
from echosonar.reason.prompt import build_prompt
from echosonar.reason.synthetic import tiny_setup
from echosonar.reason.targets import decision_weights, encode_targets
from echosonar.taxonomy import LABEL_KEYS


@pytest.fixture(scope="module")
def setup():
    # the decoder's own scores, checked against the raw HF model: no copy head here (its
    # mixture has its own tests in tests/reason/test_copy_head.py)
    return tiny_setup(n=6, seed=2, copy_head=False)


def test_loss_counts_target_tokens_only(setup):
    studies, tok, model = setup
    batch, targets = studies[:3], [sft_target(sf) for sf in studies[:3]]
    o = model.forward_sft(batch, targets)
    n_each = [len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in targets]
    assert int(o["n_tokens"]) == sum(n_each)
    assert o["target_ids"][0, n_each[0] - 1] == tok.eos_token_id
    # reference: HF causal-LM loss over the whole sequence with prompt and pad labels = -100
    emb, pm = model.prompt_embeds(batch)
    x = torch.cat([emb, model.lm.get_input_embeddings()(o["target_ids"])], 1)
    mask = torch.cat([pm, o["target_mask"]], 1)
    logits = model.lm(inputs_embeds=x, attention_mask=mask,
                      position_ids=position_ids_from_mask(mask)).logits
    labels = torch.cat([torch.full_like(pm, -100),
                        o["target_ids"].masked_fill(o["target_mask"] == 0, -100)], 1)
    ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                          ignore_index=-100, reduction="sum")
    assert torch.allclose(o["lm_loss_sum"], ref, rtol=1e-5)
    # prompt-side labels do not matter: any label on the prompt positions is ignored ...
    junk = labels.clone()
    junk[:, :pm.shape[1]] = torch.randint(0, len(tok), pm.shape)
    assert not torch.allclose(F.cross_entropy(logits[:, :-1].flatten(0, 1),
                                              junk[:, 1:].flatten(), reduction="sum"), ref)
    # ... and the gradient of the LM loss reaches the target logits only (not prompt logits)
    emb = emb.detach().requires_grad_(True)
    x = torch.cat([emb, model.lm.get_input_embeddings()(o["target_ids"])], 1)
    full = model.lm(inputs_embeds=x, attention_mask=mask,
                    position_ids=position_ids_from_mask(mask)).logits
    full.retain_grad()
    F.cross_entropy(full[:, pm.shape[1] - 1:-1].flatten(0, 1),
                    labels[:, pm.shape[1]:].flatten(), ignore_index=-100).backward()
    assert full.grad[:, :pm.shape[1] - 1].abs().sum() == 0


def test_batch_independence_and_changed_targets(setup):
    studies, _, model = setup
    targets = [sft_target(sf) for sf in studies[:4]]
    both = model.forward_sft(studies[:4], targets)
    alone = model.forward_sft(studies[1:2], targets[1:2])
    t = alone["logits"].shape[1]
    assert torch.allclose(both["logits"][1, :t], alone["logits"][0], atol=1e-5)
    assert torch.allclose(both["label_logits"][1], alone["label_logits"][0], atol=1e-5)
    # changing a late target token leaves earlier token logits and the label scores unchanged
    changed = targets[1][:-20] + "X" * 20
    o = model.forward_sft(studies[1:2], [changed])
    cut = len(model.tokenizer(targets[1][:-20], add_special_tokens=False)["input_ids"]) - 1
    assert torch.allclose(o["logits"][0, :cut], alone["logits"][0, :cut], atol=1e-5)
    assert torch.allclose(o["label_logits"], alone["label_logits"])


def test_label_scores(setup):
    studies, _, model = setup
    s = model.label_scores(studies[:3])
    assert s.shape == (3, len(LABEL_KEYS)) and ((s > 0) & (s < 1)).all()
    # the prompt-only (left-padded) pass and the packed training pass agree
    o = model.forward_sft(studies[:3], [sft_target(sf) for sf in studies[:3]])
    assert torch.allclose(torch.sigmoid(o["label_logits"]), s, atol=1e-5)


def test_greedy_generation_matches_teacher_forcing(setup):
    studies, _, model = setup
    texts, ids, mask = model.generate(studies[:3], max_new_tokens=12, return_ids=True)
    assert len(texts) == 3 and all(len(t) == 1 for t in texts) and ids.shape == (3, 12)
    emb, pm = model.prompt_embeds(studies[:3])
    x = torch.cat([emb, model.lm.get_input_embeddings()(ids)], 1)
    m = torch.cat([pm, mask], 1)
    logits = model.lm(inputs_embeds=x, attention_mask=m, position_ids=position_ids_from_mask(m)
                      ).logits[:, emb.shape[1] - 1:-1]
    assert torch.equal(logits.argmax(-1)[mask == 1], ids[mask == 1])
    lp = model.completion_logprobs(studies[:3], ids, mask)
    assert lp.shape == ids.shape and (lp <= 0).all()


def test_sampling_groups_and_eos(setup):
    studies, tok, model = setup
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    a = model.generate(studies[:2], max_new_tokens=8, do_sample=True, num_samples=3,
                       top_p=0.9, generator=g1)
    b = model.generate(studies[:2], max_new_tokens=8, do_sample=True, num_samples=3,
                       top_p=0.9, generator=g2)
    assert a == b and len(a) == 2 and all(len(x) == 3 for x in a)
    # force eos as the most likely token: every completion is empty, masks stop at the eos
    eos = torch.tensor([tok.eos_token_id])
    hook = model.lm.get_output_embeddings().register_forward_hook(
        lambda mod, inp, out: out.index_fill(-1, eos, 1e4))
    try:
        texts, ids, mask = model.generate(studies[:2], max_new_tokens=5, return_ids=True)
    finally:
        hook.remove()
    assert texts == [[""], [""]] and ids.shape[1] == 1 and mask.sum() == 2


def test_save_load_identical_logits(setup, tmp_path):
    studies, _, model = setup
    targets = [sft_target(sf) for sf in studies[:2]]
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) >= \
        ["config.json", "model.safetensors", "tokenizer.json"]
    again = EchoSonarR.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        a, b = model.forward_sft(studies[:2], targets), again.forward_sft(studies[:2], targets)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["label_logits"],
                                                                 b["label_logits"])
    assert again.generate(studies[:1], max_new_tokens=6) == \
        model.generate(studies[:1], max_new_tokens=6)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["kind"] == "echosonar_r" and cfg["meta"]["feature_dims"] == model.feature_dims
    with open(tmp_path / "m" / "model.safetensors", "r+b") as f:  # tamper: refused
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(CheckpointError, match="checksum"):
        EchoSonarR.from_pretrained(tmp_path / "m")


def test_finding_weight_scales_only_decision_tokens(setup):
    from echosonar.reason.data import decision_spans

    studies, tok, model = setup
    targets = [sft_target(sf) for sf in studies]
    with torch.no_grad():
        plain = model.forward_sft(studies, targets)
        same = model.forward_sft(studies, targets, finding_weight=1.0)
        heavy = model.forward_sft(studies, targets, finding_weight=4.0)
    assert torch.equal(plain["lm_loss_sum"], same["lm_loss_sum"])
    assert heavy["n_tokens"] == plain["n_tokens"]  # normalisation stays the token count
    enc = encode_targets(model.tokenizer, targets, plain["target_mask"].sum(1).tolist(),
                         model.eos_id, model.pad_id)
    assert torch.equal(enc.ids, plain["target_ids"])  # the same cut as the SFT pass
    w = decision_weights(enc, 4.0)
    assert set(w.unique().tolist()) <= {1.0, 4.0}
    for i, t in enumerate(targets):  # weighted tokens exist exactly where a finding is stated
        assert bool((w[i] == 4.0).any()) == bool(decision_spans(t)), t
    ce = F.cross_entropy(plain["logits"].flatten(0, 1).float(),
                         plain["target_ids"].masked_fill(plain["target_mask"] == 0, -100)
                         .flatten(), ignore_index=-100, reduction="none")
    assert torch.allclose(heavy["lm_loss_sum"], (ce * w.flatten()).sum(), rtol=1e-5)
    assert any(decision_spans(t) for t in targets)  # the fixture exercises the weighting
    assert heavy["lm_loss_sum"] > plain["lm_loss_sum"]


def test_models_saved_before_flags_load_without_them(setup, tmp_path):
    studies, _, model = setup
    model.config.measurement_flags = True
    try:
        model.save_pretrained(tmp_path / "m")
    finally:
        model.config.measurement_flags = False
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["config"]["measurement_flags"]  # as written before the option existed
    path.write_text(json.dumps(cfg))
    old = EchoSonarR.from_pretrained(tmp_path / "m")
    assert not old.config.measurement_flags
    assert old.prompt_parts(studies[0]).text == build_prompt(studies[0],
                                                              measurement_flags=False).text
