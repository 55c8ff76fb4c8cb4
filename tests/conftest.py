"""Shared fixtures: the real Hydra config, composed and shrunk for CPU-sized tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import agelab  # noqa: F401  (registers resolvers)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def compose_config(tmp_path: Path, overrides: list[str] = (), config_name: str = "train"):
    """Compose ``conf/<config_name>.yaml`` as ``python -m agelab.<name>`` would, writing under tmp_path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name, overrides=[f"paths.root_dir={tmp_path}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "output")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


# A few batches on CPU: small synth splits, small images, no worker processes.
TINY = [
    "data.source.train_size=384", "data.source.val_size=128", "data.source.test_size=128",
    "data.source.image_size=72", "data.batch_size=32", "data.num_workers=0", "trainer.max_epochs=2",
    "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    return compose_config(tmp_path, TINY)
