"""Compare runs: ``python -m agelab.report [experiments=[...]] [group_by=[...]] [metrics=[...]] [format=csv] [out=<file>]``.

Reads the MLflow store (never writes to it) and prints one row per group of runs: n, mean ± std of
each metric, model size, export sizes and int8 latency. See conf/report.yaml and agelab/results/.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.errors import ConfigError, require_int, writable_folder
from agelab.results import (describe_left_out, load_runs, require_runs, select_runs, summarize,
                            to_csv, to_markdown)
from agelab.results.runs import plural
from agelab.store import store_uri

FORMATS = ("markdown", "csv")


@dataclass
class Report:
    runs: pd.DataFrame      # every run read (any status)
    selected: pd.DataFrame  # the runs in the table
    summary: pd.DataFrame   # the numbers (see agelab.results.table.summarize)
    markdown: str
    text: str               # the table in cfg.format


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def build_report(cfg: DictConfig) -> Report:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    if not isinstance(cfg.ddof, int) or cfg.ddof not in (0, 1):
        raise ConfigError(f"ddof must be 0 or 1, got {cfg.ddof!r}")
    require_int("precision", cfg.precision, 0)
    if cfg.out:
        writable_folder(Path(str(cfg.out)).parent, "out")  # before the store is read, not after the table
    uri = store_uri(cfg.root_dir, cfg.tracking_uri)
    runs = load_runs(uri, plain(cfg.experiments))
    selected = select_runs(runs, include_eval=cfg.include_eval)
    require_runs(runs, selected)
    summary = summarize(selected, plain(cfg.group_by), plain(cfg.metrics), ddof=cfg.ddof, sort_by=cfg.sort_by)
    markdown = to_markdown(summary, cfg.precision)
    return Report(runs, selected, summary, markdown, markdown if cfg.format == "markdown" else to_csv(summary))


def report(cfg: DictConfig) -> Report:
    result = build_report(cfg)
    print(result.markdown if cfg.out else result.text, end="")
    # What was counted goes to stderr: stdout stays the table alone (python -m agelab.report format=csv > t.csv).
    left_out = describe_left_out(result.runs, cfg.include_eval)
    experiments = ", ".join(sorted(result.selected["experiment"].unique()))
    print(f"{plural(len(result.selected), 'run')} in {plural(len(result.summary), 'group')} from {experiments}"
          + (f"; left out: {left_out}" if left_out else ""), file=sys.stderr)
    if cfg.out:
        out = Path(cfg.out)
        out.write_text(result.text)
        print(f"{cfg.format} table written to {out}", file=sys.stderr)
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def main(cfg: DictConfig) -> None:
    run_or_exit(report, cfg)


if __name__ == "__main__":
    run_main(main, "report")
