"""The models predict can run: a PyTorch checkpoint or an exported ONNX file.

A backend knows its input size, the face-crop settings its model was trained with, how to turn
uint8 face crops into its input batch, and how to run a batch. ``run`` returns numpy arrays:
``age`` and ``std`` always (years), ``probs`` and ``group`` for group heads, ``p_male`` for heads
with a gender output.

The ONNX backend needs onnxruntime, OpenCV and numpy only: it never imports PyTorch, so an
exported model runs where PyTorch is not installed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agelab.config import CONF_DIR, crop_margin
from agelab.errors import ConfigError
from agelab.groups import GROUP_CENTRES
from agelab.inference.preprocess import eval_batch

log = logging.getLogger(__name__)

FACES_CONFIG = CONF_DIR / "faces" / "default.yaml"
CROPPER_METADATA = "agelab.cropper"  # ONNX metadata key: JSON of the FaceCropper settings, when present


def default_face_settings(input_size: int) -> dict:
    """conf/faces/default.yaml, with the crop stored at the margin the eval transform centre-crops from."""
    faces = OmegaConf.load(FACES_CONFIG)
    faces.output_size = crop_margin(input_size)
    settings = OmegaConf.to_container(faces, resolve=True)
    settings.pop("_target_", None)
    return settings


def checkpoint_face_settings(cfg: DictConfig) -> dict:
    """The FaceCropper settings the checkpoint's training data was prepared with, else the defaults."""
    stored = OmegaConf.select(cfg, "data.source.cropper")
    if stored is None:  # built-in synthetic faces: never cropped from photos
        return default_face_settings(int(cfg.model.input_size))
    settings = OmegaConf.to_container(stored, resolve=True)
    settings.pop("_target_", None)
    return settings


def group_outputs(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Age stand-in and spread of a group distribution, as the group heads decode them (agelab.heads.ce)."""
    probs = np.asarray(probs, np.float32)
    age = probs @ GROUP_CENTRES.astype(np.float32)
    var = probs @ np.square(GROUP_CENTRES).astype(np.float32) - np.square(age)
    return {"age": age, "std": np.sqrt(np.clip(var, 0, None)), "probs": probs, "group": probs.argmax(axis=1)}


class TorchBackend:
    """A checkpoint written by agelab.train; crops go through the eval transform stored in it."""

    name = "torch"

    def __init__(self, ckpt: str | Path, device: str = "cpu", threads: int | None = None):
        try:
            import torch
        except ImportError as exc:  # a deployment with onnxruntime only
            raise ConfigError("ckpt= needs PyTorch, which is not installed here: predict with an exported "
                              "model instead, onnx=<model.int8.onnx>") from exc

        from agelab.checkpoint import eval_transform, load_module

        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ConfigError(f"device: {device!r} is not a torch device ({exc})") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
        module, cfg = load_module(ckpt)
        self.module, self.cfg = module.to(self.device), cfg
        self.input_size = int(cfg.model.input_size)
        self.task = getattr(module.head, "task", "age")
        self.transform = eval_transform(cfg)
        self.face_settings = checkpoint_face_settings(cfg)

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, 3, self.input_size, self.input_size), np.float32)
        return np.stack([np.asarray(self.transform(image=c)["image"], dtype=np.float32) for c in crops])

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
        if self.task == "group":
            result = group_outputs(out["probs"])
            result.update(age=out["age"], std=out["std"])  # the head's own decoding
        else:
            result = {"age": out["age"], "std": out.get("std", np.full_like(out["age"], np.nan))}
        if "p_male" in out:
            result["p_male"] = out["p_male"]
        return result


class OnnxBackend:
    """An ONNX model written by agelab.export, run by onnxruntime on the CPU.

    Input: the first graph input, a float32 (N, 3, S, S) batch in [-1, 1]; S is read from its
    shape (``input_size`` is needed only where the shape is symbolic). Outputs are taken by name
    as agelab.exporting writes them (``age``, ``std`` | ``probs``, optional ``p_male``); a graph
    with other names is read by position: age, then std. Crop settings: the JSON under the
    metadata key ``agelab.cropper`` when the file has it, else conf/faces/default.yaml.
    """

    name = "onnx"

    def __init__(self, path: str | Path, input_size: int | None = None, threads: int | None = None):
        from agelab.inference.onnx_session import image_side, ort_session

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"onnx: no model at {path}")
        self.session = ort_session(path, threads, input_size)  # its input checked before anything runs
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_size = image_side(path, graph_input.shape, input_size)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.task = "group" if "probs" in self.output_names and "age" not in self.output_names else "age"
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CROPPER_METADATA in metadata:
            self.face_settings = json.loads(metadata[CROPPER_METADATA])
        else:
            self.face_settings = default_face_settings(self.input_size)
            log.warning("%s carries no %s metadata: faces are cropped with conf/faces/default.yaml, "
                        "which may not be how its training faces were cut", path, CROPPER_METADATA)

    def preprocess(self, crops: list[np.ndarray]) -> np.ndarray:
        return eval_batch(crops, self.input_size)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        named = dict(zip(self.output_names, values))
        if self.task == "group":
            result = group_outputs(named["probs"])
        elif "age" in named:
            result = {"age": named["age"], "std": named.get("std", np.full_like(named["age"], np.nan))}
        else:  # foreign names: age first, then std
            result = {"age": values[0], "std": values[1] if len(values) > 1 else np.full_like(values[0], np.nan)}
        result = {k: np.asarray(v) if k == "probs" else np.asarray(v).reshape(-1) for k, v in result.items()}
        if "p_male" in named:
            result["p_male"] = np.asarray(named["p_male"]).reshape(-1)
        return result


def load_backend(ckpt: str | None = None, onnx: str | None = None, device: str = "cpu",
                 input_size: int | None = None, threads: int | None = None):
    """The backend for exactly one of ``ckpt`` and ``onnx``."""
    if bool(ckpt) == bool(onnx):
        raise ConfigError("give exactly one model: ckpt=<checkpoint from agelab.train> or onnx=<model.onnx from agelab.export>")
    if onnx:
        return OnnxBackend(onnx, input_size=input_size, threads=threads)
    if input_size is not None:
        raise ConfigError("input_size applies to ONNX models only; a checkpoint knows its input size")
    return TorchBackend(ckpt, device=device, threads=threads)

