"""The whole export of one trained model: files, agreement checks, latency, sizes.

Used by ``python -m agelab.export`` and by the ExportCallback at the end of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agelab.errors import ConfigError
from agelab.exporting.checks import agreement
from agelab.exporting.formats import export_onnx, export_torchscript, file_mb, write_metadata
from agelab.exporting.latency import onnx_latency_ms, torch_latency_ms
from agelab.exporting.quantize import quantize_int8
from agelab.exporting.runners import ort_runner, torch_runner, torch_threads, torchscript_runner
from agelab.exporting.wrapper import ExportableAgeModel
from agelab.models.summary import count_params

log = logging.getLogger(__name__)
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "torchscript": "model.ts"}
PREFIX = "export/"


@dataclass
class ExportResult:
    """The files written and every figure measured (metric names carry the ``export/`` prefix)."""

    out_dir: Path
    files: dict[str, Path]
    metrics: dict[str, float] = field(default_factory=dict)
    task: str = "age"
    outputs: tuple[str, ...] = ("age", "std")
    test_set: str = ""  # which faces the score is over (see test_set_id); "" when unknown

    @property
    def score_name(self) -> str:
        """The test score a registry compares versions by: MAE (lower is better) or accuracy."""
        return "test_accuracy" if self.task == "group" else "test_mae"

    @property
    def score(self) -> float | None:
        """The fp32 ONNX model's test score, if the checks ran."""
        key = f"{PREFIX}fp32_{'accuracy' if self.task == 'group' else 'mae'}"
        return self.metrics.get(key)

    def better(self, score: float, other: float) -> bool:
        return score >= other if self.task == "group" else score <= other


class EvalFaces(torch.utils.data.Dataset):
    """One split's faces, one at a time, through the deterministic eval transform."""

    def __init__(self, split_dataset, transform):
        self.images, self.index = split_dataset.images, split_dataset.index
        self.ages, self.groups, self.transform = split_dataset.ages, split_dataset.groups, transform

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        image = np.asarray(self.images[self.index[i]])
        return {"image": self.transform(image=image)["image"], "age": self.ages[i], "group": self.groups[i]}


def eval_dataset(datamodule, split: str) -> EvalFaces:
    """The datamodule's ``split`` faces (its own split protocol) with its eval transform, whatever it
    does for training (augmentation on the device, batched reads)."""
    datamodule.setup("test")
    return EvalFaces(datamodule.datasets[split], datamodule.eval_transform)


def calibration_images(datamodule, count: int, seed: int = 0) -> np.ndarray:
    """``count`` training faces (a fixed random draw, eval transform) as (N, 3, S, S) float32."""
    if count < 1:
        raise ConfigError(f"calibration_size must be >= 1, got {count}")
    dataset = eval_dataset(datamodule, "train")
    rng = np.random.default_rng(seed)
    if count > len(dataset):
        log.warning("calibration_size=%d: the training split has %d faces, calibrating on all of them", count,
                    len(dataset))
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    return np.stack([np.asarray(dataset[int(i)]["image"], dtype=np.float32) for i in sorted(picks)])


def eval_batches(datamodule, batch_size: int = 64) -> Iterable[dict]:
    return torch.utils.data.DataLoader(eval_dataset(datamodule, "test"), batch_size=batch_size, shuffle=False)


def export_model(module: torch.nn.Module, out_dir: str | Path, input_size: int, calibration: np.ndarray,
                 checks: Iterable[dict] | None = None, check_limit: int | None = None,
                 latency_runs: int = 50, latency_warmup: int = 10, metadata: dict[str, str] | None = None
                 ) -> ExportResult:
    """Write model.onnx (fp32), model.int8.onnx and model.ts into ``out_dir`` and measure them.

    ``module`` is an AgeModule (or anything with ``.model`` and ``.head``); ``checks`` are test
    batches for the agreement numbers (skipped when None); ``latency_runs=0`` skips latency;
    ``metadata`` goes into both ONNX files (see ``onnx_metadata``).
    """
    wrapper = ExportableAgeModel.from_module(module).cpu()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {kind: out_dir / name for kind, name in FILES.items()}
    result = ExportResult(out_dir, files, task=wrapper.task, outputs=wrapper.output_names)
    # One PyTorch thread for the export and the checks: reproducible numbers, and no thread
    # oversubscription when loader workers or other jobs share the cores (PyTorch's OpenMP pool
    # then slows down tenfold). The latency settings choose their own thread counts.
    with torch_threads(1):
        export_onnx(wrapper, files["fp32"], input_size)
        quantize_int8(files["fp32"], files["int8"], calibration)
        for kind in ("fp32", "int8"):
            write_metadata(files[kind], metadata or {})
        export_torchscript(wrapper, files["torchscript"], input_size)
        metrics = {f"{kind}_mb": file_mb(path) for kind, path in files.items()}
        metrics["num_params"] = float(count_params(wrapper))
        metrics["calibration_faces"] = float(len(calibration))
        if checks is not None:
            runners = {"torch": torch_runner(wrapper), "fp32": ort_runner(files["fp32"], threads=1),
                       "int8": ort_runner(files["int8"], threads=1),
                       "torchscript": torchscript_runner(files["torchscript"])}
            found = agreement(runners, checks, task=wrapper.task, limit=check_limit)
            metrics["check_faces"] = found.pop("count")
            metrics.update(found)
        if latency_runs > 0:  # one face, one thread: the edge-device setting
            timing = {"runs": latency_runs, "warmup": latency_warmup, "batch": 1, "threads": 1}
            metrics["latency_ms_fp32_torch"] = torch_latency_ms(wrapper, input_size, **timing)
            metrics["latency_ms_fp32_onnx"] = onnx_latency_ms(files["fp32"], input_size, **timing)
            metrics["latency_ms_int8_onnx"] = onnx_latency_ms(files["int8"], input_size, **timing)
    result.metrics = {PREFIX + k: float(v) for k, v in metrics.items()}
    return result


# Where the data lies on this machine: not part of which faces they are.
LOCATION_KEYS = ("root", "test_root", "cache_dir")


def test_set_id(cfg, faces: float | None) -> str:
    """Which test faces a score is over: a digest of the checkpoint's data source (dataset, reader,
    split, fold, seed, sizes, face settings; not its folders) and the number of faces checked. Scores
    are compared in the model registry only between equal ids."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in LOCATION_KEYS}
        return [strip(v) for v in node] if isinstance(node, list) else node

    if cfg is None or faces is None:
        return ""
    source = strip(OmegaConf.to_container(cfg.data.source, resolve=True))
    digest = hashlib.sha1(json.dumps(source, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{digest} ({int(faces)} faces)"


def onnx_metadata(cfg) -> dict[str, str]:
    """What predict needs beside the weights: the face-crop settings the model was trained with
    (``agelab.cropper``, JSON), so photos are cropped as the training faces were."""
    from agelab.inference.backends import CROPPER_METADATA, checkpoint_face_settings

    return {CROPPER_METADATA: json.dumps(checkpoint_face_settings(cfg), sort_keys=True)}


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, calibration_size: int = 256,
                      check_limit: int | None = None, latency_runs: int = 50, latency_warmup: int = 10,
                      checks: bool = True):
    """Export a checkpoint written by agelab.train; its stored config rebuilds the data for
    calibration (training faces) and the checks (test faces). Returns (ExportResult, cfg)."""
    from agelab.checkpoint import load_module  # the Lightning module stack, only when needed

    module, cfg = load_module(ckpt_path)
    datamodule = instantiate(cfg.data)
    calibration = calibration_images(datamodule, calibration_size)
    batches = eval_batches(datamodule, cfg.data.get("eval_batch_size") or cfg.data.batch_size) if checks else None
    result = export_model(module, out_dir, int(cfg.model.input_size), calibration, batches, check_limit,
                          latency_runs, latency_warmup, onnx_metadata(cfg))
    result.test_set = test_set_id(cfg, result.metrics.get(f"{PREFIX}check_faces"))
    return result, cfg


def format_table(result: ExportResult) -> str:
    """The figures as an aligned two-column text table."""
    rows = [(name.removeprefix(PREFIX), value) for name, value in result.metrics.items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'figure':<{width}}  value", f"{'-' * width}  ----------"]
    lines += [f"{name:<{width}}  {value:.6g}" for name, value in rows]
    lines += [f"{'file ' + kind:<{width}}  {path}" for kind, path in result.files.items()]
    return "\n".join(lines)
