"""Face crops -> the model's input batch, without PyTorch or albumentations (for the ONNX path).

The same arithmetic as the eval transform of conf/augment/smlf.yaml (``eval``): resize the crop
to crop_margin(S) = round(S / 0.875) with bilinear interpolation, take the centred S x S square,
scale to [-1, 1] (mean 0.5, std 0.5), RGB channels first. tests/test_predict.py checks that it
matches the albumentations transform a checkpoint stores.
"""

from __future__ import annotations

import cv2
import numpy as np

from agelab.config import crop_margin


def eval_image(crop: np.ndarray, input_size: int) -> np.ndarray:
    """One uint8 RGB crop -> float32 (3, S, S) in [-1, 1]."""
    margin = crop_margin(input_size)
    if crop.shape[:2] != (margin, margin):
        crop = cv2.resize(crop, (margin, margin), interpolation=cv2.INTER_LINEAR)
    top = (margin - input_size) // 2  # albumentations' CenterCrop rounds the offset down
    square = crop[top:top + input_size, top:top + input_size].astype(np.float32)
    return np.ascontiguousarray(((square / 255.0 - 0.5) / 0.5).transpose(2, 0, 1), dtype=np.float32)


def eval_batch(crops: list[np.ndarray], input_size: int) -> np.ndarray:
    """uint8 RGB crops -> float32 (N, 3, S, S)."""
    if not crops:
        return np.zeros((0, 3, input_size, input_size), np.float32)
    return np.stack([eval_image(c, input_size) for c in crops])
