"""GRPO loss maths against hand-computed numbers, and its gradient identities."""

import copy
import math

import pytest
import torch

from echosonar.reason.grpo_loss import (
    group_advantages,
    grpo_loss,
    k3_kl,
    loss_normalizer,
    per_token_loss,
    reduce_loss,
)
from echosonar.reason.grpo_toy import ToyPolicy, toy_studies
from echosonar.reason.rollout import completion_logps, rollout

# Two completions: lengths 2 and 3 (the third slot of row 0 is padding, its values must not count)
LOGPS = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -1.5, -1.0]])
OLD = torch.tensor([[-1.2, -2.0, 3.0], [-0.5, -1.0, -1.0]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
ADV = torch.tensor([1.0, -2.0])
# By hand, eps = 0.2. Row 0 (A = 1): ratios e^0.2 = 1.2214 (clipped to 1.2) and 1 -> losses
# -1.2, -1.0. Row 1 (A = -2): ratios 1, e^-0.5 = 0.6065 (min picks the clipped 0.8), 1 ->
# losses 2, 1.6, 2.
ROW0, ROW1 = [-1.2, -1.0], [2.0, 1.6, 2.0]


@pytest.mark.parametrize("loss_type, expected", [
    ("grpo", (sum(ROW0) / 2 + sum(ROW1) / 3) / 2),       # per-sequence mean, then batch mean
    ("dapo", (sum(ROW0) + sum(ROW1)) / 5),                # token mean over the batch
    ("dr_grpo", (sum(ROW0) + sum(ROW1)) / (2 * 4)),       # sum / (B x max_completion_length)
])
def test_loss_by_hand(loss_type, expected):
    loss, m = grpo_loss(LOGPS, OLD, ADV, MASK, loss_type=loss_type, epsilon=0.2,
                        max_completion_length=4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # one token clipped low (ratio 0.61 < 0.8 with A < 0), one high (1.22 > 1.2 with A > 0)
    assert m["clip_low"] == pytest.approx(1 / 5)
    assert m["clip_high"] == pytest.approx(1 / 5)
    assert m["clip_region"] == pytest.approx(2 / 5)


def test_epsilon_high_and_kl_by_hand():
    # eps_high = 0.3 lets row 0's first ratio (1.2214) through unclipped
    ref = LOGPS + torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.0, -0.2]])
    kl = [math.exp(0.1) - 0.1 - 1, math.exp(-0.2) + 0.2 - 1]
    loss, m = grpo_loss(LOGPS, OLD, ADV, MASK, loss_type="dapo", epsilon=0.2, epsilon_high=0.3,
                        beta=0.5, ref_logps=ref)
    expected = (-math.exp(0.2) - 1.0 + sum(ROW1) + 0.5 * sum(kl)) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert m["kl"] == pytest.approx(sum(kl) / 5, abs=1e-7)
    assert m["clip_high"] == 0.0


def test_chunked_reduction_equals_whole_batch():
    for lt in ("grpo", "dapo", "dr_grpo"):
        whole, _ = grpo_loss(LOGPS, OLD, ADV, MASK, loss_type=lt, max_completion_length=4)
        norm = loss_normalizer(lt, MASK, 4)
        parts = 0.0
        for rows in (slice(0, 1), slice(1, 2)):
            loss, _ = per_token_loss(LOGPS[rows], OLD[rows], ADV[rows])
            parts += reduce_loss(loss, MASK[rows], lt, norm).item()
        assert parts == pytest.approx(whole.item(), abs=1e-6), lt


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5, 3.0, 1.0])
    a, zero = group_advantages(r, 2)
    s = math.sqrt(0.5)  # unbiased std of {1, 0}
    assert a.tolist() == pytest.approx([0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0, 0,
                                        1 / (2 * s + 1e-4), -1 / (2 * s + 1e-4)], abs=1e-6)
    assert zero.tolist() == [False, True, False]
    a, _ = group_advantages(r, 2, "none")
    assert a.tolist() == pytest.approx([0.5, -0.5, 0, 0, 1, -1])
    a, _ = group_advantages(r, 2, "batch")
    assert a.tolist() == pytest.approx((torch.tensor([0.5, -0.5, 0, 0, 1, -1]) /
                                        (r.std() + 1e-4)).tolist())
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(r, 4)


def test_k3_kl_nonnegative_and_zero_at_equality():
    x = torch.randn(100)
    assert torch.all(k3_kl(x, x) == 0)
    assert torch.all(k3_kl(x, x + torch.randn(100)) >= 0)


def _toy_batch(seed=0):
    torch.manual_seed(seed)
    pol = ToyPolicy(seed=seed)
    studies = toy_studies(2, seed=seed)
    r = rollout(pol, studies, num_samples=3, max_new_tokens=6)
    return pol, studies, r


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_mu1_ratio_is_one_and_gradient_is_weighted_loglik(loss_type):
    pol, studies, r = _toy_batch()
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 2.0, 0.0])
    mask = r.completion_mask.float()

    def logps():
        e, m = pol.prompt_embeds(studies)
        return completion_logps(pol.lm, e, m, r.completion_ids, r.completion_mask, 3, 0.7)[0]

    lp = logps()
    loss, met = grpo_loss(lp, lp.detach(), adv, r.completion_mask, loss_type=loss_type,
                          max_completion_length=6)
    assert met["ratio_mean"] == 1.0 and met["clip_region"] == 0.0
    pol.zero_grad()
    loss.backward()
    g_grpo = [p.grad.clone() for p in pol.parameters()]
    # advantage-weighted log-likelihood with the same normalisation
    pol.zero_grad()
    lp = logps()
    if loss_type == "grpo":
        ref = -((adv[:, None] * lp * mask).sum(-1) / mask.sum(-1)).mean()
    elif loss_type == "dapo":
        ref = -(adv[:, None] * lp * mask).sum() / mask.sum()
    else:
        ref = -(adv[:, None] * lp * mask).sum() / (6 * 6)
    ref.backward()
    for a, b in zip(g_grpo, (p.grad for p in pol.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_kl_zero_when_policy_is_reference():
    pol, studies, r = _toy_batch(seed=1)
    ref_pol = copy.deepcopy(pol).requires_grad_(False)
    e, m = pol.prompt_embeds(studies)
    lp, _ = completion_logps(pol.lm, e, m, r.completion_ids, r.completion_mask, 3)
    with torch.no_grad():
        e2, m2 = ref_pol.prompt_embeds(studies)
        ref, _ = completion_logps(ref_pol.lm, e2, m2, r.completion_ids, r.completion_mask, 3)
    adv = torch.linspace(-1, 1, 6)
    l0, _ = grpo_loss(lp, lp.detach(), adv, r.completion_mask)
    l1, met = grpo_loss(lp, lp.detach(), adv, r.completion_mask, beta=0.1, ref_logps=ref)
    assert met["kl"] == 0.0
    assert l1.item() == pytest.approx(l0.item(), abs=1e-7)
    # ...and the KL term's gradient vanishes there too (d/dx of e^d - d - 1 at d = 0 is 0)
    g0 = torch.autograd.grad(l0, pol.lm.lm_head.weight, retain_graph=True)[0]
    g1 = torch.autograd.grad(l1, pol.lm.lm_head.weight)[0]
    torch.testing.assert_close(g0, g1)


def test_beta_needs_reference():
    with pytest.raises(ValueError, match="ref_logps"):
        per_token_loss(LOGPS, OLD, ADV, beta=0.1)
