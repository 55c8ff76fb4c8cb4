"""Shared fixtures: the real Hydra config, composed and shrunk for CPU-sized tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from agelab import config

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def compose_config(tmp_path: Path, overrides: list[str] = (), config_name: str = "train"):
    """Compose ``conf/<config_name>.yaml`` as ``python -m agelab.<name>`` would, writing under tmp_path."""
    return config.compose_config(config_name, [f"paths.root_dir={tmp_path}", *overrides], tmp_path / "output")


# A few batches on CPU: small synth splits, small images, no worker processes.
TINY = [
    "data.source.train_size=384", "data.source.val_size=128", "data.source.test_size=128",
    "data.source.image_size=72", "data.batch_size=32", "data.num_workers=0", "trainer.max_epochs=2",
    "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    return compose_config(tmp_path, TINY)
