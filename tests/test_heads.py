"""Each head's loss and decoding on hand-made logits with known answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from agelab.errors import ConfigError
from agelab.groups import GROUP_CENTRES
from agelab.heads import (CoralHead, CornHead, DexHead, DLDLHead, GroupCEHead, MeanVarianceHead, MultiTaskHead,
                          RegressionHead)

NAN = float("nan")


def logit(p):
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p) - torch.log1p(-p)


# ----- masking and weighting, shared by every head
@pytest.mark.parametrize("make", [lambda: DexHead(4, max_age=10), lambda: RegressionHead(4, max_age=10, loss="mse"),
                                  lambda: CoralHead(4, max_age=10), lambda: CornHead(4, max_age=10),
                                  lambda: MeanVarianceHead(4, max_age=10), lambda: DLDLHead(4, max_age=10),
                                  lambda: GroupCEHead(4)])
def test_unknown_targets_are_ignored_and_weights_apply(make):
    torch.manual_seed(0)
    head = make()
    logits = torch.randn(3, head(torch.zeros(1, 4)).shape[1])
    known_only = head.loss(logits[:2], {"age": torch.tensor([3.0, 7.0]), "group": torch.tensor([1, 2])})
    with_unknown = head.loss(logits, {"age": torch.tensor([3.0, 7.0, NAN]), "group": torch.tensor([1, 2, -1])})
    assert torch.allclose(known_only, with_unknown)
    first = head.loss(logits[:1], {"age": torch.tensor([3.0]), "group": torch.tensor([1])})
    weighted = head.loss(logits[:2], {"age": torch.tensor([3.0, 7.0]), "group": torch.tensor([1, 2]),
                                      "weight": torch.tensor([1.0, 0.0])})
    assert torch.allclose(first, weighted)
    # No usable target at all: a zero loss that still backpropagates.
    logits.requires_grad_(True)
    nothing = head.loss(logits, {"age": torch.full((3,), NAN), "group": torch.full((3,), -1)})
    nothing.backward()
    assert nothing.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


# ----- ce
def test_ce_trains_on_groups_or_on_the_age_s_group_and_decodes_the_group_centre():
    head = GroupCEHead(4)
    logits = torch.randn(3, 8)
    expected = F.cross_entropy(logits, torch.tensor([2, 4, 7]))
    # Face 2 has only an age (30 -> group 25-32), face 3 only a group.
    batch = {"age": torch.tensor([NAN, 30.0, NAN]), "group": torch.tensor([2, -1, 7])}
    assert torch.allclose(head.loss(logits, batch), expected)
    certain = torch.full((2, 8), -30.0)
    certain[0, 4] = 30.0
    certain[1, 0] = certain[1, 7] = 30.0  # half the mass on 0-2, half on 60+
    out = head.decode(certain)
    assert out["group"][0] == 4 and out["age"][0].item() == pytest.approx(GROUP_CENTRES[4])
    assert out["age"][1].item() == pytest.approx((GROUP_CENTRES[0] + GROUP_CENTRES[7]) / 2)
    assert out["std"][1].item() == pytest.approx((GROUP_CENTRES[7] - GROUP_CENTRES[0]) / 2, rel=1e-4)
    assert out["probs"].shape == (2, 8) and head.task == "group"


# ----- regression
def test_regression_losses_on_scaled_ages():
    logits = torch.tensor([[0.3]])
    batch = {"age": torch.tensor([40.0])}  # target 0.4 after scaling by max_age=100, error 0.1
    assert RegressionHead(4, 100, loss="l1").loss(logits, batch).item() == pytest.approx(0.1)
    assert RegressionHead(4, 100, loss="mse").loss(logits, batch).item() == pytest.approx(0.01)
    # huber_delta=3 years = 0.03 scaled: linear part, delta * (|e| - delta / 2).
    assert RegressionHead(4, 100, loss="huber").loss(logits, batch).item() == pytest.approx(0.03 * (0.1 - 0.015))
    out = RegressionHead(4, 100, loss="l1").decode(torch.tensor([[0.3], [-0.2], [1.5]]))
    assert torch.allclose(out["age"], torch.tensor([30.0, 0.0, 100.0])) and bool(out["std"].isnan().all())
    with pytest.raises(ConfigError, match="head.loss must be one of"):
        RegressionHead(4, 100, loss="l2")


def test_regression_gaussian_nll_learns_a_spread():
    head = RegressionHead(4, 100, loss="gaussian_nll")
    assert head.fc.out_features == 2
    log_var = math.log(0.05 ** 2)  # 0.05 scaled = 5 years
    logits = torch.tensor([[0.3, log_var]])
    loss = head.loss(logits, {"age": torch.tensor([40.0])})
    assert loss.item() == pytest.approx(0.5 * (log_var + 0.1 ** 2 / 0.05 ** 2), rel=1e-5)
    assert head.decode(logits)["std"].item() == pytest.approx(5.0, rel=1e-4)


# ----- ordinal
def test_coral_loss_matches_coral_pytorch_documented_value():
    # coral_pytorch.losses.coral_loss docstring: these logits and levels give 0.6920.
    logits = torch.tensor([[2.1, 1.8, -2.1, -1.8], [1.9, -1., -1.5, -1.3], [1.9, 1.8, 1.7, 1.6]])
    ages = torch.tensor([2.0, 1.0, 4.0])  # levels [1,1,0,0], [1,0,0,0], [1,1,1,1]
    assert CoralHead(3, max_age=4).loss(logits, {"age": ages}).item() == pytest.approx(0.6920, abs=1e-4)


def test_coral_decodes_known_probabilities():
    p = torch.tensor([[0.9, 0.8, 0.6, 0.3, 0.1]])  # P(age > k), k = 0..4
    head = CoralHead(3, max_age=5)
    out = head.decode(logit(p))
    assert out["age"].item() == 3  # three questions answered "yes"
    # Implied distribution [.1, .1, .2, .3, .2, .1]: mean 2.7.
    dist = torch.tensor([.1, .1, .2, .3, .2, .1])
    mean = (dist * torch.arange(6)).sum()
    assert out["std"].item() == pytest.approx(((dist * (torch.arange(6) - mean) ** 2).sum()).sqrt().item(), rel=1e-4)
    assert CoralHead(3, max_age=5, prediction="expected").decode(logit(p))["age"].item() == pytest.approx(2.7, rel=1e-5)
    # Initial biases descend, so a fresh head already predicts P(age > k) falling with k.
    assert torch.all(head.bias[:-1] > head.bias[1:])


def test_corn_loss_matches_coral_pytorch_documented_value_and_decodes_by_product():
    # coral_pytorch.losses.corn_loss docstring: this set-up gives 0.7127.
    torch.manual_seed(123)
    features = torch.rand(8, 99)
    ages = torch.tensor([0, 1, 2, 2, 2, 3, 4, 4]).float()
    logits = torch.nn.Linear(99, 4)(features)
    assert CornHead(99, max_age=4).loss(logits, {"age": ages}).item() == pytest.approx(0.7127, abs=1e-4)
    conditional = torch.tensor([[0.9, 0.8, 0.5, 0.5]])  # P(age > k | age > k-1)
    out = CornHead(3, max_age=4).decode(logit(conditional))
    assert torch.allclose(out["probs"], torch.tensor([[0.9, 0.72, 0.36, 0.18]]))
    assert out["age"].item() == 2
    assert CornHead(3, max_age=4, prediction="expected").decode(logit(conditional))["age"].item() == pytest.approx(2.16)


# ----- distributions over ages
def test_fractional_ages_go_to_the_nearest_whole_year_with_halves_up():
    batch = {"age": torch.tensor([2.5, 24.5, 25.5, 24.49, 70.0, NAN])}
    classes, known = DexHead(4, max_age=65).whole_age_targets(batch, torch.zeros(1))
    assert classes.tolist()[:5] == [3, 25, 26, 24, 65] and known.tolist() == [True] * 5 + [False]
    levels, _, _ = CoralHead(4, max_age=65).levels(batch, torch.zeros(1))
    assert levels[:5].sum(1).tolist() == [3, 25, 26, 24, 65]  # levels passed = the whole age


def test_dex_decodes_expected_value_and_ignores_unknown_ages():
    head = DexHead(4, max_age=65)
    logits = torch.full((2, 66), -1e4)
    logits[:, 20] = logits[:, 30] = 0.0
    out = head.decode(logits)
    assert out["age"][0].item() == pytest.approx(25.0, abs=1e-3) and out["std"][0].item() == pytest.approx(5.0, abs=1e-3)
    assert out["probs"].shape == (2, 66)


def test_mean_variance_loss_on_a_known_distribution():
    probs = torch.tensor([[0.1, 0.2, 0.4, 0.2, 0.1]])  # ages 0..4: mean 2, variance 1.2
    head = MeanVarianceHead(4, max_age=4, lambda_mean=0.2, lambda_variance=0.05)
    loss = head.loss(probs.log(), {"age": torch.tensor([3.0])})
    expected = -math.log(0.2) + 0.2 * 0.5 * (2 - 3) ** 2 + 0.05 * 1.2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    out = head.decode(probs.log())
    assert out["age"].item() == pytest.approx(2.0) and out["std"].item() == pytest.approx(math.sqrt(1.2), rel=1e-5)


def test_dldl_target_distribution_and_kl_loss():
    head = DLDLHead(4, max_age=100, sigma=3.0)
    target = head.target_distribution(torch.tensor([30.0, 30.5, 0.0]))
    assert torch.allclose(target.sum(1), torch.ones(3))
    assert target[0].argmax() == 30 and target[2].argmax() == 0
    assert target[1, 30] == pytest.approx(target[1, 31].item())  # half way: two equal peaks
    ages = torch.arange(101.0)
    mean = (target[0] * ages).sum()
    assert mean.item() == pytest.approx(30.0, abs=1e-4)
    assert (target[0] * (ages - mean) ** 2).sum().sqrt().item() == pytest.approx(3.0, rel=1e-3)
    # KL is zero when the prediction is the target, positive otherwise.
    as_logits = target.clamp_min(1e-30).log()  # (far-off ages underflow to 0)
    assert head.loss(as_logits[:1], {"age": torch.tensor([30.0])}).item() == pytest.approx(0.0, abs=1e-5)
    assert head.loss(as_logits[2:], {"age": torch.tensor([30.0])}).item() > 1
    with pytest.raises(ConfigError, match="sigma"):
        DLDLHead(4, sigma=0)


# ----- multi-task
def test_multitask_adds_a_gender_loss_where_gender_is_known():
    torch.manual_seed(0)
    head = MultiTaskHead(4, lambda in_features: DexHead(in_features, max_age=10), gender_weight=0.5)
    features = torch.randn(3, 4)
    logits = head(features)
    assert logits.shape == (3, 11 + 2) and head.task == "age"
    ages = torch.tensor([3.0, 5.0, 7.0])
    age_loss = head.age_head.loss(logits[:, :-2], {"age": ages})
    gender_ce = F.cross_entropy(logits[:2, -2:], torch.tensor([1, 0]))
    loss = head.loss(logits, {"age": ages, "gender": torch.tensor([1, 0, -1])})
    assert loss.item() == pytest.approx((age_loss + 0.5 * gender_ce).item(), rel=1e-5)
    # Genders as strings, and batches without any gender.
    assert torch.allclose(head.loss(logits, {"age": ages, "gender": ["m", "f", "?"]}), loss)
    assert torch.allclose(head.loss(logits, {"age": ages}), age_loss)
    out = head.decode(logits)
    assert out["age"].shape == (3,) and set(out["gender"].tolist()) <= {0, 1}
    assert torch.equal(out["gender"], (out["p_male"] > 0.5).long())


def test_bad_head_options_are_config_errors():
    with pytest.raises(ConfigError, match="max_age"):
        DexHead(4, max_age=0)
    with pytest.raises(ConfigError, match="prediction"):
        CoralHead(4, max_age=5, prediction="mode")
    with pytest.raises(ConfigError, match="gender_weight"):
        MultiTaskHead(4, DexHead(4, 5), gender_weight=-1)
