"""Compression beyond int8: magnitude pruning with fine-tuning and knowledge distillation, each run
reporting itself against the uncompressed model. One tiny base training serves the file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from agelab import config
from agelab.checkpoint import load_module, read_checkpoint
from agelab.cli import run_or_exit
from agelab.compression.distill import DistillationModule, kl_distillation
from agelab.compression.prune import cubic_sparsity, magnitude_masks, prunable_weights, sparsity_of
from agelab.errors import ConfigError
from agelab.tracking import RUN_ID_KEY
from agelab.training import build_module, train

from conftest import TINY


def compose_config(root, overrides):
    """Each run its own output folder (no resuming another's last.ckpt), all in one MLflow store."""
    compose_config.count = getattr(compose_config, "count", 0) + 1
    return config.compose_config("train", [f"paths.root_dir={root}", *overrides], root / f"run{compose_config.count}")

SMALLER = ["callbacks.compression_report.latency_runs=2", "callbacks.compression_report.latency_warmup=1"]
NO_FIGURES = [f"~callbacks.{name}" for name in ("cs_curve_figure", "confusion_matrix_figure", "mae_breakdown_figure",
                                                "learning_curves_figure", "worst_predictions_figure")]
BASE = [*TINY, *NO_FIGURES, "data.source.train_size=192", "data.source.val_size=64", "data.source.test_size=64",
        "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A trained smlf_small (dex head) in its own store; the compressed runs log beside it."""
    root = tmp_path_factory.mktemp("compress")
    metrics = train(compose_config(root, BASE))
    client = MlflowClient(f"sqlite:///{root.resolve() / 'mlflow.db'}")
    return SimpleNamespace(root=root, ckpt=metrics["best_model_path"], metrics=metrics, client=client,
                           run_id=read_checkpoint(metrics["best_model_path"])[RUN_ID_KEY])


def run_of(client: MlflowClient, run_name_prefix: str):
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    return next(r for r in runs if r.info.run_name.startswith(run_name_prefix))


# ----- pruning: the parts

def test_cubic_schedule_reaches_the_amount_at_the_end_of_the_ramp():
    steps = [cubic_sparsity(0.8, epoch, 3) for epoch in range(5)]
    assert steps[0] == pytest.approx(0.8 * (1 - (2 / 3) ** 3))
    assert steps[1] == pytest.approx(0.8 * (1 - (1 / 3) ** 3))
    assert steps[2:] == [pytest.approx(0.8)] * 3
    assert all(a < b for a, b in zip(steps[:3], steps[1:3]))
    assert cubic_sparsity(0.5, 0, 0) == 0.5  # no ramp: at once


def test_global_masks_zero_the_smallest_weights_across_layers():
    torch.manual_seed(0)
    net = nn.ModuleDict({"model": nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)),
                         "head": nn.Linear(8, 4)})
    with torch.no_grad():
        net["head"].weight.mul_(100)  # large weights: global pruning leaves this layer alone
    layers = prunable_weights(net)
    before = torch.cat([w.detach().flatten() for w in layers]).abs()
    masks = magnitude_masks(layers, 0.5, "global")
    weights = torch.cat([w.flatten() for w in layers])
    assert sparsity_of(layers) == pytest.approx(0.5, abs=1 / len(weights))
    assert before[weights == 0].max() <= before[weights != 0].min()  # the smallest went
    assert torch.count_nonzero(net["head"].weight) == net["head"].weight.numel()
    assert all(torch.equal(m == 0, w == 0) for m, w in zip(masks, layers))
    # Raising the amount keeps every earlier zero.
    zero_before = [(w == 0).clone() for w in layers]
    magnitude_masks(layers, 0.7, "global")
    assert all(bool((w[z] == 0).all()) for w, z in zip(layers, zero_before))
    assert sparsity_of(layers) == pytest.approx(0.7, abs=1 / len(weights))


def test_layer_scope_prunes_each_layer_by_the_amount():
    torch.manual_seed(0)
    net = nn.ModuleDict({"model": nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)), "head": nn.Linear(8, 4)})
    with torch.no_grad():
        net["head"].weight.mul_(100)
    layers = prunable_weights(net)
    magnitude_masks(layers, 0.5, "layer")
    for w in layers:
        assert float((w == 0).float().mean()) == pytest.approx(0.5, abs=1 / w.numel())


def test_pruning_options_are_checked():
    from agelab.compression.prune import MagnitudePruning

    for bad in ({"amount": 1.0}, {"amount": 0}, {"ramp_epochs": -1}, {"scope": "channel"}):
        with pytest.raises(ConfigError, match="prune"):
            MagnitudePruning(**bad)


def test_checkpoints_from_the_ramp_no_longer_compete_at_full_sparsity():
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import ModelCheckpoint

    from agelab.compression.prune import forget_ramp_checkpoints

    best = ModelCheckpoint(monitor="val/mae", mode="min", save_top_k=1)
    best.best_k_models, best.best_model_path = {"epoch000.ckpt": torch.tensor(3.0)}, "epoch000.ckpt"
    best.best_model_score = best.kth_value = torch.tensor(3.0)
    best.kth_best_model_path = "epoch000.ckpt"
    trainer = SimpleNamespace(checkpoint_callbacks=[best],
                              strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, **_: decision))
    assert not best.check_monitor_top_k(trainer, torch.tensor(4.0))  # the ramp's 3.0 would stay best
    forget_ramp_checkpoints(trainer)
    assert best.best_model_path == "" and best.check_monitor_top_k(trainer, torch.tensor(4.0))


# ----- pruning: a run

def test_prune_run_keeps_its_zeros_and_reports_against_the_base(base):
    cfg = compose_config(base.root, [*BASE, "compress=prune", f"weights_from={base.ckpt}", "trainer.max_epochs=3",
                                     "callbacks.prune.amount=0.6", "callbacks.prune.ramp_epochs=2", *SMALLER])
    metrics = train(cfg)
    module, _ = load_module(metrics["best_model_path"])
    # At the full sparsity, whatever epoch 0 (ramp: 52.5 %) scored, and fine-tuning kept the zeros.
    assert sparsity_of(prunable_weights(module)) == pytest.approx(0.6, abs=1e-3)
    assert Path(metrics["best_model_path"]).name != "epoch000.ckpt"

    run = run_of(base.client, "prune-")
    m = run.data.metrics
    assert run.data.tags["compress.method"] == "prune"
    assert run.data.tags["compress.base_run_id"] == base.run_id
    assert run.data.tags["compress"] == "prune"
    assert m["prune/sparsity"] > 0.5  # the prunable layers; biases and BatchNorm are not pruned
    assert m["compress/base_sparsity"] < 0.01
    assert m["compress/nonzero_params"] < 0.5 * m["compress/base_nonzero_params"]
    assert m["compress/params"] == m["compress/base_params"]
    assert m["compress/size_mb_gzip"] < 0.75 * m["compress/base_size_mb_gzip"]
    # The base is evaluated on the same test faces as its own training run tested on.
    assert m["compress/base_test_mae"] == pytest.approx(base.metrics["test/mae"], abs=1e-3)
    assert m["compress/test_mae"] == pytest.approx(m["test/mae"], abs=1e-3)
    assert m["compress/test_mae_delta"] == pytest.approx(m["test/mae"] - base.metrics["test/mae"], abs=1e-3)
    assert m["compress/latency_ms"] > 0 and m["compress/base_latency_ms"] > 0
    history = base.client.get_metric_history(run.info.run_id, "prune/sparsity")
    assert len(history) >= 2 and max(h.value for h in history) > 0.5
    report = base.client.download_artifacts(run.info.run_id, "compress/report.txt", str(base.root))
    text = open(report).read()
    assert "uncompressed" in text
    params = int(m["compress/params"])
    assert f"{'params':<16}{params:>14,}{params:>14,}" in text.splitlines()  # counts in full, not 3.565e+05
    assert run.data.tags["compress.base_ckpt"] == str(Path(base.ckpt).resolve())


def test_checkpoints_of_compiled_models_load_under_plain_names(base, tmp_path):
    from agelab.checkpoint import load_weights

    checkpoint = torch.load(base.ckpt, map_location="cpu", weights_only=True)
    plain = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k.replace("model.", "model._orig_mod.", 1) if k.startswith("model.") else k: v
                                for k, v in plain.items()}
    compiled = tmp_path / "compiled.ckpt"
    torch.save(checkpoint, compiled)
    module, _ = load_module(compiled)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in plain.items())
    fresh = build_module(compose_config(base.root, BASE))
    load_weights(fresh, compiled)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in plain.items())


def test_weights_from_a_different_model_is_one_clear_line(base, capsys):
    cfg = compose_config(base.root, [*BASE, "model=simple_cnn", f"weights_from={base.ckpt}"])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(base.ckpt) in err and "do not fit this model" in err
    assert err.endswith("it was trained with (SMLFNetSmall, DexHead, data.max_age=100)")  # what to pass instead


def test_prune_without_weights_from_asks_for_it(base, capsys):
    cfg = compose_config(base.root, [*BASE, "compress=prune"])
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    assert "weights_from is required" in capsys.readouterr().err


# ----- distillation

def test_kl_term_is_zero_for_identical_outputs_and_scales_with_temperature():
    logits = torch.randn(6, 11)
    assert float(kl_distillation(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(6, 11)
    direct = torch.nn.functional.kl_div(other.log_softmax(1), logits.log_softmax(1), log_target=True,
                                        reduction="batchmean")
    assert float(kl_distillation(other, logits, 1.0)) == pytest.approx(float(direct), rel=1e-5)


def distill_module(base, overrides):
    cfg = compose_config(base.root, [*BASE, "compress=distill", f"teacher_ckpt={base.ckpt}", *overrides])
    return build_module(cfg)


def test_teacher_stays_out_of_the_student(base):
    student = distill_module(base, [])
    assert isinstance(student, DistillationModule) and student.kind == "kl"
    assert not any(k.startswith("_teacher") or "teacher" in k for k in student.state_dict())
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in load_module(base.ckpt)[0].parameters())
    student.train()
    assert not student.teacher.training
    assert all(not p.requires_grad for p in student.teacher.parameters())


@pytest.mark.parametrize("head", ["coral", "corn", "multitask_coral"])
def test_an_ordinal_student_learns_from_the_teacher_s_age(head):
    from agelab.compression.distill import differentiable_age
    from agelab.heads import CoralHead, CornHead, MultiTaskHead

    ordinal = (CornHead if head == "corn" else CoralHead)(4, max_age=10)  # predicts by counting P > 0.5
    student = MultiTaskHead(4, ordinal) if head.startswith("multitask") else ordinal
    logits = student(torch.randn(3, 4, requires_grad=True))
    loss = torch.nn.functional.smooth_l1_loss(differentiable_age(student, logits), torch.tensor([2.0, 5.0, 8.0]))
    loss.backward()
    assert ordinal.fc.weight.grad.abs().sum() > 0  # the threshold count would give no gradient at all


def test_distillation_term_vanishes_when_the_student_is_the_teacher(base):
    student = distill_module(base, ["module.alpha=1.0"])
    student.load_state_dict(student.teacher.state_dict())
    student.eval()
    images = torch.randn(4, 3, 64, 64)
    assert float(student.distillation_loss(student.logits(images), images)) == pytest.approx(0.0, abs=1e-5)


def test_auto_kind_falls_back_to_ages_for_other_heads(base):
    student = distill_module(base, ["head=regression"])
    assert student.kind == "age"
    images = torch.randn(4, 3, 64, 64)
    loss = student.distillation_loss(student.logits(images), images)
    loss.backward()
    assert loss > 0 and student.head.fc.weight.grad is not None
    with pytest.raises(Exception, match="kind=age"):  # a ConfigError, wrapped by Hydra's instantiate
        distill_module(base, ["head=regression", "module.kind=kl"])


def test_distillation_run_reports_the_student_against_the_teacher(base):
    cfg = compose_config(base.root, [*BASE, "compress=distill", f"teacher_ckpt={base.ckpt}", "model=simple_cnn",
                                     "trainer.max_epochs=1", *SMALLER])
    train(cfg)
    run = run_of(base.client, "distill-")
    m = run.data.metrics
    assert run.data.tags["compress.method"] == "distill"
    assert "train/distill_loss" in m and m["train/distill_loss"] > 0
    assert m["compress/base_test_mae"] == pytest.approx(base.metrics["test/mae"], abs=1e-3)
    assert m["compress/test_mae"] == pytest.approx(m["test/mae"], abs=1e-3)
    assert m["compress/base_params"] == pytest.approx(
        sum(p.numel() for p in load_module(base.ckpt)[0].parameters()))
    assert m["compress/params"] != m["compress/base_params"]


def test_distill_without_teacher_asks_for_it(base, capsys):
    cfg = compose_config(base.root, [*BASE, "compress=distill"])
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    assert "teacher_ckpt is required" in capsys.readouterr().err
