"""What a resume (or weights_from) compares between the command and the checkpoint's stored config."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf, open_dict

from agelab.errors import ConfigError
from agelab.resume import check_resume, setup_differences, warn_if_other_data
from agelab.tracking import CONFIG_KEY

from conftest import TINY, compose_config


def checkpoint_of(tmp_path, *overrides) -> dict:
    cfg = compose_config(tmp_path, [*TINY, *overrides])
    with open_dict(cfg):
        del cfg["hydra"]
    return {CONFIG_KEY: OmegaConf.to_yaml(cfg, resolve=True)}


def command(tmp_path, *overrides):
    return compose_config(tmp_path, [*TINY, *overrides])


def test_how_to_run_may_change_what_to_train_may_not(tmp_path):
    stored = checkpoint_of(tmp_path, "trainer.max_epochs=2")
    # more epochs (the cosine T_max follows them), loader workers, compile: the same training
    assert setup_differences(command(tmp_path, "trainer.max_epochs=5", "data.num_workers=2", "compile=true"),
                             stored) == []
    assert setup_differences(command(tmp_path, "data.source.train_size=256"), stored) == [
        "data.source.train_size=384"]
    assert "optimizer.lr=0.003" in setup_differences(command(tmp_path, "optimizer.lr=0.1"), stored)
    assert "model._target_=agelab.models.smlf.SMLFNetSmall" in setup_differences(
        command(tmp_path, "model=simple_cnn"), stored)
    assert setup_differences(command(tmp_path), {}) == []  # a checkpoint without a stored config


def test_resume_error_and_weights_from_warning(tmp_path, caplog):
    stored = checkpoint_of(tmp_path)
    with pytest.raises(ConfigError, match=r"^last.ckpt was trained with another setup; repeat its overrides to "
                                          r"resume it \(seed=42; all of them"):
        check_resume(command(tmp_path, "seed=7"), stored, "last.ckpt")
    with caplog.at_level(logging.WARNING, logger="agelab.resume"):
        warn_if_other_data(command(tmp_path, "seed=7"), stored, "base.ckpt")  # seed is not data: quiet
        assert not caplog.records
        warn_if_other_data(command(tmp_path, "data.source.test_size=32"), stored, "base.ckpt")
    assert "weights_from=base.ckpt was trained on other data (data.source.test_size=128)" in caplog.text
