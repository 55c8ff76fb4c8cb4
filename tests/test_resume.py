"""What a resume (or weights_from) compares between the command and the checkpoint's stored config."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf, open_dict

from agelab.errors import ConfigError
from agelab.resume import check_resume, compare_setup, warn_if_other_data
from agelab.tracking import CONFIG_KEY

from conftest import TINY, compose_config


def command(tmp_path, *overrides):
    real = any(o.startswith("data=") for o in overrides)  # the synth-only sizes don't apply there
    return compose_config(tmp_path, [*(o for o in TINY if not (real and o.startswith("data.source."))), *overrides])


def checkpoint_of(tmp_path, *overrides) -> dict:
    cfg = command(tmp_path, *overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return {CONFIG_KEY: OmegaConf.to_yaml(cfg, resolve=True)}


def overrides(cfg, checkpoint) -> list[str]:
    return compare_setup(cfg, checkpoint)[1]


def test_how_to_run_may_change_what_to_train_may_not(tmp_path):
    stored = checkpoint_of(tmp_path, "trainer.max_epochs=2")
    # more epochs (the cosine T_max follows them), loader workers, compile: the same training
    assert overrides(command(tmp_path, "trainer.max_epochs=5", "data.num_workers=2", "compile=true"), stored) == []
    assert overrides(command(tmp_path, "data.source.train_size=256"), stored) == ["data.source.train_size=384"]
    assert overrides(command(tmp_path, "optimizer.lr=0.1"), stored) == ["optimizer.lr=0.003"]
    # the seed alone, not the augmentation seeds that follow it
    assert overrides(command(tmp_path, "seed=7"), stored) == ["seed=42"]
    assert "model._target_=agelab.models.smlf.SMLFNetSmall" in overrides(command(tmp_path, "model=simple_cnn"), stored)
    assert overrides(command(tmp_path), {}) == []  # a checkpoint without a stored config


def test_a_moved_dataset_folder_and_keys_newer_than_the_checkpoint_are_not_differences(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    stored = checkpoint_of(tmp_path, "data=adience", f"data.root={tmp_path / 'a'}")
    assert overrides(command(tmp_path, "data=adience", f"data.root={tmp_path / 'b'}"), stored) == []
    old = OmegaConf.create(stored[CONFIG_KEY])
    del old.data["folds"]  # written before data.folds existed
    assert overrides(command(tmp_path, "data=adience", f"data.root={tmp_path / 'a'}"),
                     {CONFIG_KEY: OmegaConf.to_yaml(old)}) == []


def test_resume_error_and_weights_from_warning(tmp_path, caplog):
    stored = checkpoint_of(tmp_path)
    with pytest.raises(ConfigError, match=r"^last.ckpt was trained with another setup; repeat its overrides to "
                                          r"resume it \(seed=42; all of them"):
        check_resume(command(tmp_path, "seed=7"), stored, "last.ckpt")
    with pytest.raises(ConfigError, match=r", or add auto_resume=false to start a new run$"):  # found by itself
        check_resume(command(tmp_path, "seed=7"), stored, "last.ckpt", "add auto_resume=false")
    with caplog.at_level(logging.WARNING, logger="agelab.resume"):
        warn_if_other_data(command(tmp_path, "optimizer.lr=0.1"), stored, "base.ckpt")  # same faces: quiet
        warn_if_other_data(command(tmp_path, "data.batch_size=8"), stored, "base.ckpt")  # only batched otherwise
        warn_if_other_data(command(tmp_path, "seed=1"), stored, "base.ckpt")  # synth: only the augmentation seed
        assert not caplog.records
        warn_if_other_data(command(tmp_path, "data.source.test_size=32", "optimizer.lr=0.1", "data.batch_size=8"),
                           stored, "base.ckpt")
    # only what changes the faces is named (repeating the rest, e.g. compress=null, would undo a pruning run)
    assert "weights_from=base.ckpt was trained on other data (data.source.test_size=128):" in caplog.text


def test_a_seed_that_draws_the_split_is_other_data_for_weights_from(tmp_path, caplog):
    stored = checkpoint_of(tmp_path, "data=utkface", f"data.root={tmp_path}")
    with caplog.at_level(logging.WARNING, logger="agelab.resume"):
        warn_if_other_data(command(tmp_path, "data=utkface", f"data.root={tmp_path}", "seed=7"), stored, "b.ckpt")
    assert "weights_from=b.ckpt was trained on other data (seed=42)" in caplog.text


def test_another_group_is_named_as_the_group_choice_it_was_trained_with(tmp_path):
    from agelab.resume import group_choices
    from agelab.tracking import CHOICES_KEY

    def stored_with_choices(*trained):
        return {**checkpoint_of(tmp_path, *trained), CHOICES_KEY: group_choices(command(tmp_path, *trained))}

    stored = stored_with_choices("head=regression", "head.loss=huber")
    # regression's own keys (huber_delta) don't exist under head=ce: the group is named, then its keys
    assert overrides(command(tmp_path, "head=ce"), stored) == ["head=regression", "head.loss=huber"]
    root = f"data.root={tmp_path}"
    stored = stored_with_choices("data=utkface", root, "data/split@data.source.split=subject")
    assert overrides(command(tmp_path, "data=utkface", root), stored) == ["data/split@data.source.split=subject"]
    named = overrides(command(tmp_path, "data=synth"), stored)
    assert named[0] == "data=utkface" and "data/split@data.source.split=subject" in named
    assert not [o for o in named if "_target_" in o]


def test_a_new_run_sets_the_checkpoints_of_the_one_before_aside(tmp_path, caplog):
    from agelab.run_folder import set_aside_old_checkpoints

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_text("old")
    (folder / "epoch002.ckpt").write_text("old best")
    with caplog.at_level(logging.WARNING, logger="agelab.run_folder"):
        moved = set_aside_old_checkpoints(folder)
    aside = [p for p in folder.iterdir() if p.name.startswith("replaced-")]
    assert moved[(folder / "last.ckpt").resolve()] == (aside[0] / "last.ckpt").resolve()
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["epoch002.ckpt", "last.ckpt"]
    assert not list(folder.glob("*.ckpt")) and "2 checkpoint(s) of the run before it moved" in caplog.text
    assert set_aside_old_checkpoints(folder) == {}  # nothing left to move: nothing happens
    set_aside_old_checkpoints(tmp_path / "missing")
    assert len(list(folder.iterdir())) == 1


def test_a_run_whose_process_was_killed_before_its_first_checkpoint_is_ended_by_the_next(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from agelab.run_folder import RUN_FILE, end_stranded_run

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("agelab")
    killed, ended, new = (client.create_run(experiment).info.run_id for _ in range(3))
    client.set_terminated(ended, "FAILED")  # (SIGINT: Lightning ended it itself)
    folder = tmp_path / "checkpoints"
    end_stranded_run(folder, client, killed)
    assert (folder / RUN_FILE).read_text() == killed
    end_stranded_run(folder, client, killed)  # the same run resumed: nothing to end
    assert client.get_run(killed).info.status == "RUNNING"
    with caplog.at_level(logging.WARNING, logger="agelab.run_folder"):
        end_stranded_run(folder, client, new)
    assert client.get_run(killed).info.status == "KILLED" and f"run {killed} of {folder}" in caplog.text
    assert client.get_run(killed).data.tags["agelab.ended"].endswith(f"run {new} started in its folder")
    (folder / RUN_FILE).write_text(ended)
    end_stranded_run(folder, client, new)
    assert client.get_run(ended).info.status == "FAILED" and (folder / RUN_FILE).read_text() == new
