"""Predict ages on photos, folders and videos: ``python -m agelab.predict <path ...> [ckpt= | onnx= | model_uri=]``.

Paths may be bare arguments, anywhere among the overrides (they become ``input=<path>``, or
``input=[<path>, ...]`` for several, as a shell glob gives), or ``input=<path>``.
See conf/predict.yaml for the options and agelab.inference for the pieces.
Exit code: 0 when every file was read (a photo without a face included), 1 when a file could not be
read or failed, 2 for a setting that is wrong.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.errors import ConfigError, require_int, writable_folder

log = logging.getLogger(__name__)


def hydra_quote(value: str) -> str:
    """``value`` as a quoted Hydra override value that parses back to exactly ``value``."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)  # backslashes before a quote stay literal
    return "'" + value.replace("${", "\\${").replace("'", "\\'") + "'"


def is_override(arg: str) -> bool:
    """A Hydra override (``key=value``, ``+key=value``, ``~key``) rather than a path; an existing file
    or folder is a path whatever its name."""
    if os.path.exists(arg) or os.path.islink(arg):
        return False
    return "=" in arg or arg.startswith(("~", "+"))


def positional_input(argv: list[str]) -> list[str]:
    """Bare arguments (paths, before or after the overrides) become ``input=<path>`` or, several,
    ``input=[<path>, ...]``."""
    flags_at = next((i for i, arg in enumerate(argv) if arg.startswith("-") and not os.path.lexists(arg)),
                    len(argv))  # (a photo may be named -x.jpg)
    head, tail = argv[:flags_at], argv[flags_at:]  # from the first flag (--cfg job, -m) on: Hydra's own syntax
    paths = [arg for arg in head if not is_override(arg)]
    if not paths:
        return argv
    if any(arg.startswith("input=") for arg in head):
        raise ConfigError(f"input: give the paths either bare or as input=[...], not both ({paths[0]} and input=)")
    rest = [arg for arg in head if is_override(arg)]
    value = hydra_quote(paths[0]) if len(paths) == 1 else "[" + ",".join(hydra_quote(p) for p in paths) + "]"
    return [f"input={value}", *rest, *tail]


# Statuses of a file that could not be read or failed: the command then ends with exit code 1.
FAILED_STATUSES = ("unreadable", "too_large", "error")
SHOWN_FAILURES = 20  # failed files named on the console (all are in summary.json)


def input_paths(value) -> list[Path]:
    """``input`` as a list of paths, each of them checked (one line for a wrong one)."""
    if not value:
        raise ConfigError("input: give a photo, a folder or a video, e.g. python -m agelab.predict photo.jpg ckpt=<checkpoint>")
    paths = [Path(str(v)) for v in (value if OmegaConf.is_list(value) or isinstance(value, list) else [value])]
    for source in paths:
        if not source.exists() and not source.is_symlink():
            raise ConfigError(f"input: no file or folder at {source}")
        if source.is_dir() and all(path.is_dir() for path in source.rglob("*")):
            raise ConfigError(f"input: the folder {source} holds no files")
    return list(dict.fromkeys(paths))  # a path given twice is predicted once


def chosen_model(cfg: DictConfig, download_dir: Path):
    """The FoundModel (agelab.inference.model_lookup) of ``ckpt`` / ``onnx`` as given, else of the model
    ``model_uri`` names or the default one, downloaded from the store; says which it took."""
    from agelab.inference.model_lookup import FoundModel, find_model
    from agelab.store import store_uri

    ckpt, onnx = cfg.get("ckpt"), cfg.get("onnx")
    if ckpt or onnx:
        if cfg.get("model_uri"):
            raise ConfigError("give one model: model_uri=, ckpt= or onnx=")
        return FoundModel(ckpt, onnx, str(ckpt or onnx))
    found = find_model(cfg.get("model_uri"), store_uri(cfg.paths.root_dir, cfg.get("tracking_uri")), download_dir)
    print(f"model: {found.description}")
    return found


def load_model(cfg: DictConfig):
    """(the backend of the model the config chooses, its description); see chosen_model."""
    from agelab.inference import load_backend

    with tempfile.TemporaryDirectory(prefix="agelab-model-") as downloads:
        found = chosen_model(cfg, Path(downloads))
        backend = load_backend(ckpt=found.ckpt, onnx=found.onnx, device=str(cfg.device),
                               input_size=cfg.get("input_size"), threads=cfg.get("threads"))
    return backend, found.description


def predict(cfg: DictConfig):
    """Run the prediction the config describes; returns the agelab.inference Report."""
    from agelab.inference import AgePredictor, VideoOptions, make_cropper, predict_input

    sources = input_paths(cfg.get("input"))
    for key in ("threads", "input_size"):
        require_int(key, cfg.get(key), 1, allow_none=True)
    for key in ("tta_flip", "annotate"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}")
    video_cfg = OmegaConf.to_container(cfg.video, resolve=True)
    video = VideoOptions(every=video_cfg["every"], max_frames=video_cfg["max_frames"], codec=video_cfg["codec"],
                         smoothing=video_cfg["smoothing"])
    backend, _ = load_model(cfg)
    cropper = make_cropper(backend.face_settings, OmegaConf.to_container(cfg.faces, resolve=True))
    predictor = AgePredictor(backend, cropper, tta_flip=cfg.tta_flip)
    log.info("%s model, %dx%d input, %s%s", backend.name, backend.input_size, backend.input_size, cropper,
             ", flip TTA" if cfg.tta_flip else "")
    out_dir = writable_folder(cfg.out_dir)  # (after the model and settings are checked: nothing left behind)
    report = predict_input(predictor, sources, out_dir, annotate_outputs=cfg.annotate, video=video)
    print(report.summary_line())
    for name, path in report.outputs.items():
        print(f"{name}: {path}")
    return report


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    report = run_or_exit(predict, cfg)
    failed = [(file, status) for file, status in report.file_status.items() if status in FAILED_STATUSES]
    for file, status in failed[:SHOWN_FAILURES]:
        print(f"{file}: {status}", file=sys.stderr)
    if len(failed) > SHOWN_FAILURES:
        print(f"... and {len(failed) - SHOWN_FAILURES} more (summary.json lists every file)", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    run_main(main, "predict", bare_arguments=positional_input)
