"""Train a model from the Hydra config: ``python -m agelab.train [overrides]`` (agelab.training.train)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.training import train


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_or_exit(train, cfg)
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    run_main(main, "train")
