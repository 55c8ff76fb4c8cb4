"""Predict ages on photos, folders and videos: ``python -m agelab.predict <path> ckpt=<ckpt> | onnx=<model>``.

The path may come first as a bare argument (it becomes ``input=<path>``) or as ``input=<path>``.
See conf/predict.yaml for the options and agelab.inference for the pieces.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from agelab.cli import run_or_exit
from agelab.errors import ConfigError

log = logging.getLogger(__name__)


def hydra_quote(value: str) -> str:
    """``value`` as a quoted Hydra override value that parses back to exactly ``value``."""
    value = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)  # backslashes before a quote stay literal
    return "'" + value.replace("${", "\\${").replace("'", "\\'") + "'"


def positional_input(argv: list[str]) -> list[str]:
    """A bare first argument (a path, not an override or a flag) becomes ``input=<path>``."""
    if not argv:
        return argv
    first = argv[0]
    if first.startswith("-") or ("=" in first and not os.path.exists(first)):
        return argv
    return [f"input={hydra_quote(first)}", *argv[1:]]


def predict(cfg: DictConfig):
    """Run the prediction the config describes; returns the agelab.inference Report."""
    from agelab.inference import AgePredictor, VideoOptions, load_backend, make_cropper, predict_input

    if not cfg.get("input"):
        raise ConfigError("input: give a photo, a folder or a video, e.g. python -m agelab.predict photo.jpg ckpt=<checkpoint>")
    source = Path(str(cfg.input))
    if not source.exists() and not source.is_symlink():
        raise ConfigError(f"input: no file or folder at {source}")
    if source.is_dir() and not any(path.is_file() for path in source.rglob("*")):
        raise ConfigError(f"input: the folder {source} holds no files")
    for key in ("threads", "input_size"):
        if cfg.get(key) is not None and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise ConfigError(f"{key} must be null or an integer >= 1, got {cfg[key]!r}")
    for key in ("tta_flip", "annotate"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be true or false, got {cfg[key]!r}")
    video_cfg = OmegaConf.to_container(cfg.video, resolve=True)
    video = VideoOptions(every=video_cfg["every"], max_frames=video_cfg["max_frames"], codec=video_cfg["codec"],
                         smoothing=video_cfg["smoothing"])
    backend = load_backend(ckpt=cfg.get("ckpt"), onnx=cfg.get("onnx"), device=str(cfg.device),
                           input_size=cfg.get("input_size"), threads=cfg.get("threads"))
    cropper = make_cropper(backend.face_settings, OmegaConf.to_container(cfg.faces, resolve=True))
    predictor = AgePredictor(backend, cropper, tta_flip=cfg.tta_flip)
    log.info("%s model, %dx%d input, %s%s", backend.name, backend.input_size, backend.input_size, cropper,
             ", flip TTA" if cfg.tta_flip else "")
    report = predict_input(predictor, source, cfg.out_dir, annotate_outputs=cfg.annotate, video=video)
    print(report.summary_line())
    for name, path in report.outputs.items():
        print(f"{name}: {path}")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def _main(cfg: DictConfig) -> None:
    run_or_exit(predict, cfg)


def main() -> None:
    sys.argv[1:] = positional_input(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
