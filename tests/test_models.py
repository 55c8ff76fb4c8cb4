import pytest
import torch

from agelab.heads import DexHead
from agelab.models import MODELS, build_model
from agelab.errors import ConfigError


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def test_smlf_matches_paper_parameter_count_and_shapes():
    model = build_model("smlf", input_size=112)
    head = DexHead(model.out_features, max_age=65)
    assert head.fc.out_features == 66
    assert abs(n_params(model, head) - 1.37e6) / 1.37e6 <= 0.03
    model.eval()
    features = model(torch.randn(2, 3, 112, 112))
    assert features.shape == (2, 128)
    assert head(features).shape == (2, 66)


def test_smlf_small_is_a_quarter_of_the_size():
    model = build_model("smlf_small", input_size=64)
    head = DexHead(model.out_features, max_age=65)
    assert 0.35e6 <= n_params(model, head) <= 0.38e6
    model.eval()
    assert model(torch.randn(3, 3, 64, 64)).shape == (3, 64)


def test_unknown_model_and_bad_input_size_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(ConfigError, match="multiple of 16"):
        build_model("smlf", input_size=100)
    assert {"smlf", "smlf_small"} <= set(MODELS)


def test_dex_decodes_expected_value_and_spread():
    head = DexHead(4, max_age=65)
    logits = torch.full((1, 66), -1e4)
    logits[0, 20] = logits[0, 30] = 0.0  # half the mass on 20, half on 30
    out = head.decode(logits)
    assert out["age"].item() == pytest.approx(25.0, abs=1e-3)
    assert out["std"].item() == pytest.approx(5.0, abs=1e-3)
    # Targets above max_age go to the last class.
    loss_old = head.loss(logits, {"age": torch.tensor([90.0])})
    logits[0, 65] = 10.0
    assert head.loss(logits, {"age": torch.tensor([90.0])}) < loss_old
