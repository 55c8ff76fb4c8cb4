"""Every registered model with every head: forward, backward, decode; plus per-family checks."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from agelab.errors import ConfigError
from agelab.heads import HEADS, DexHead, MultiTaskHead
from agelab.models import MODELS, build_model
from agelab.models.levi_hassner import LeviHassnerNet, feature_map_size
from agelab.models.pretrained import pretrained_backbone, without_pretrained_weights
from agelab.models.summary import markdown_table, summary_rows

# The smallest input each model allows, to keep the CPU cost down.
SMALL_INPUT = {"inception_v3": 75, "levi_hassner": 96, "smlf": 32, "smlf_small": 32}
HEAD_BUILDERS = {**{name: functools.partial(cls, max_age=20) if name != "ce" else cls for name, cls in HEADS.items()},
                 "multitask": lambda n: MultiTaskHead(n, functools.partial(DexHead, max_age=20), gender_weight=0.5)}


@functools.cache
def small_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, input_size=SMALL_INPUT.get(name, 32))


def test_the_zoo_has_every_family():
    assert {"levi_hassner", "smlf", "smlf_small", "shufflenet", "inception", "inception_v3", "mobilenet_v2",
            "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "simple_cnn"} <= set(MODELS)


@pytest.mark.parametrize("head_name", sorted(HEAD_BUILDERS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_model_and_head_train_and_decode(model_name, head_name):
    model = small_model(model_name).train()
    model.zero_grad(set_to_none=True)
    head = HEAD_BUILDERS[head_name](model.out_features)
    size = model.input_size
    images = torch.randn(2, 3, size, size)
    # One face with an age, one with only a group; genders: one known, one not.
    batch = {"image": images, "age": torch.tensor([12.0, float("nan")]), "group": torch.tensor([-1, 4]),
             "gender": torch.tensor([1, -1])}

    features = model(images)
    assert features.shape == (2, model.out_features)
    logits = head(features)
    loss = head.loss(logits, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    head_grads = [p.grad for p in head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert any(g.abs().sum() > 0 for g in head_grads)
    model_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert model_grads and all(torch.isfinite(g).all() for g in model_grads)
    assert sum(g.abs().sum() for g in model_grads) > 0

    with torch.no_grad():
        decoded = head.decode(logits.detach())
    assert decoded["age"].shape == (2,) and torch.isfinite(decoded["age"]).all()
    point_estimate = getattr(head, "loss_name", None) in ("l1", "mse", "huber")  # a regression: no spread
    assert decoded["std"].shape == (2,) and (decoded["std"].isnan() if point_estimate else decoded["std"] >= 0).all()
    if head.task == "group":
        assert decoded["group"].shape == (2,) and decoded["probs"].shape == (2, 8)
    else:
        assert ((decoded["age"] >= 0) & (decoded["age"] <= 20)).all()


def test_levi_hassner_flatten_size_follows_the_input_size():
    assert feature_map_size(227) == 1 and feature_map_size(816) == 6 and feature_map_size(96) == 1
    for size, side in ((96, 1), (227, 1), (256, 2), (816, 6)):
        net = LeviHassnerNet(input_size=size, dropout=0.0).eval()
        assert net.flatten_size == 384 * side * side
        assert net.classifier[0].in_features == net.flatten_size
        with torch.no_grad():
            assert net.features(torch.zeros(1, 3, size, size)).shape == (1, net.flatten_size)
    assert LeviHassnerNet(input_size=816).flatten_size == 6 * 6 * 384  # the reference's size
    with pytest.raises(ConfigError, match="too small for levi_hassner"):
        LeviHassnerNet(input_size=64)


def test_levi_hassner_dropout_is_configurable():
    net = LeviHassnerNet(input_size=96, dropout=0.5)
    assert [m.p for m in net.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    with pytest.raises(ConfigError, match="dropout"):
        LeviHassnerNet(input_size=96, dropout=1.0)


def test_torchvision_models_lose_their_classifier_and_check_input_size():
    model = build_model("mobilenet_v3_small", input_size=64)
    assert not any(isinstance(m, nn.Linear) and m.out_features == 1000 for m in model.modules())
    assert model.removed_layer == "classifier.3" and model.out_features == 1024
    assert build_model("resnet18").removed_layer == "fc"
    with pytest.raises(ConfigError, match="needs >= 75"):
        build_model("inception_v3", input_size=64)


def test_pretrained_without_a_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no file at .*missing.pth"):
        pretrained_backbone("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="weights_path is required"):
        pretrained_backbone("resnet18", None)
    with pytest.raises(ConfigError, match="not a torchvision backbone"):
        pretrained_backbone("smlf", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_text("not a state dict")
    with pytest.raises(ConfigError, match="not a loadable state dict"):
        pretrained_backbone("resnet18", str(tmp_path / "junk.pth"))


def test_pretrained_loads_a_torchvision_state_dict(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(1)
    source = mobilenet_v3_small(weights=None)  # stands in for downloaded ImageNet weights, classifier included
    torch.save(source.state_dict(), tmp_path / "mnv3.pth")
    model = pretrained_backbone("mobilenet_v3_small", str(tmp_path / "mnv3.pth"), input_size=64)
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name
    # Same features as the source network up to its removed last layer.
    source.classifier[3] = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), source.eval()(x))

    # A state dict of another architecture is refused, naming the mismatch.
    torch.save(build_model("resnet18").net.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match="does not match backbone"):
        pretrained_backbone("mobilenet_v3_small", str(tmp_path / "resnet.pth"))
    # A checkpoint's config rebuilds the architecture without the weights file.
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"_target_": "agelab.models.pretrained.pretrained_backbone", "backbone": "resnet18",
                            "weights_path": "/gone.pth", "input_size": 64})
    plain = without_pretrained_weights(cfg)
    assert plain._target_ == "agelab.models.resnet.ResNet18" and plain.input_size == 64


def test_pretrained_accepts_an_agelab_checkpoint_state_dict(tmp_path):
    torch.manual_seed(2)
    trained = build_model("shufflenet", input_size=32)
    head = DexHead(trained.out_features, max_age=10)
    state = {**{f"model.{k}": v for k, v in trained.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "run.ckpt")
    model = pretrained_backbone("shufflenet", str(tmp_path / "run.ckpt"), input_size=32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))


def test_summary_table_counts_parameters_and_flops():
    rows = summary_rows(["smlf", "simple_cnn"])
    smlf = rows[0]
    assert smlf["params + DEX-66"] == "1.36 M" and smlf["input"] == "112x112" and "1.37 M" in smlf["paper"]
    # simple_cnn at 64x64: convs 3->32, 32->64, 64->128 at 64, 32, 16 px; dense 8192->256; DEX 256->66.
    macs = 64 * 64 * 3 * 32 * 9 + 32 * 32 * 32 * 64 * 9 + 16 * 16 * 64 * 128 * 9 + 8192 * 256 + 256 * 66
    assert rows[1]["MFLOPs/face"] == f"{2 * macs / 1e6:.0f}"
    table = markdown_table(rows)
    assert table.count("\n") == 3 and table.startswith("| model |")
