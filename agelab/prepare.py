"""Crop a dataset's faces into the cache: ``python -m agelab.prepare data=<name> data.root=<dir>``.

Composes the training config (conf/prepare.yaml = conf/train.yaml + a few keys), so the cache it
builds is exactly the one training will find. Prints what was kept and dropped, by reason, and
logs the counts to MLflow (experiment ``agelab-prepare``) unless ``log_to_mlflow=false``, with
``prepare/dropped.csv``: every dropped image (or label line) and its reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.errors import ConfigError

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> dict[str, int]:
    """Build the configured source's face cache; returns {"kept": n, "dropped/<reason>": n, ...}."""
    from hydra.core.hydra_config import HydraConfig

    if "data" not in cfg or "source" not in cfg.data:
        raise ConfigError("prepare needs data.source in the config (pick a dataset: data=<name>)")
    from agelab.data.prepared import DROPS_CSV, format_counts
    from agelab.data.readers.base import require_root
    from agelab.data.report import PREPARE_EXPERIMENT, counts_table, log_prepare_run, write_to_log_files

    require_root(OmegaConf.select(cfg, "data.root"), OmegaConf.select(cfg, "data.layout"))  # as training says it
    source = instantiate(cfg.data.source)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    name = getattr(source, "name", "") or choices.get("data") or "data"
    if hasattr(source, "prepare") and hasattr(source, "kept"):  # photos cropped into a cache, with counts
        dropped = source.prepare()
        kept = source.kept
    elif hasattr(source, "load"):  # e.g. the synthetic faces: nothing to crop, loading builds the cache
        kept, dropped = len(source.load()[1]), {}
    else:
        raise ConfigError(f"data.source ({type(source).__name__}) has neither prepare() nor load()")

    from rich.console import Console

    Console().print(counts_table(name, kept, dropped))
    write_to_log_files(log, format_counts(name, kept, dropped))
    folder = getattr(source, "folder", None)
    if folder is not None:
        Console().print(f"cache: {folder}")
        if sum(dropped.values()) and (Path(folder) / DROPS_CSV).is_file():
            Console().print(f"which images were dropped, and why: {Path(folder) / DROPS_CSV}")
    if cfg.get("log_to_mlflow", False):
        params = {"data": name, "cache": folder or ""}
        cropper = getattr(source, "cropper", None)
        if cropper is not None:
            params.update({f"faces.{k}": v for k, v in cropper.settings().items()})
        if "root" in cfg.data:
            params["data.root"] = OmegaConf.select(cfg, "data.root")
        run_id = log_prepare_run(cfg, name, kept, dropped, params, getattr(source, "drops", None))
        log.info("counts logged to MLflow run %s (experiment %s)", run_id, PREPARE_EXPERIMENT)
    return {"kept": kept, **{f"dropped/{reason}": n for reason, n in dropped.items()}}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_or_exit(prepare, cfg, arguments_of="data.source")  # the only part prepare builds


if __name__ == "__main__":
    run_main(main, "prepare")
