"""Photo -> faces -> ages: the shared face cropper (agelab.data.faces) in front of a backend.

The crops come from the same FaceCropper code and settings that prepared the training data, so
the model sees at prediction time the framing it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agelab.data.faces import FaceCropper, require_framing
from agelab.errors import ConfigError
from agelab.groups import GROUP_NAMES, age_to_group

# Face settings a user may override at prediction time (output_size and the framing follow the model).
TUNABLE = ("min_face_size", "min_sharpness", "max_image_side", "detect_side")


@dataclass
class FacePrediction:
    box: tuple[int, int, int, int]  # (x1, y1, x2, y2) in the image given; x2, y2 exclusive
    score: float  # detector confidence
    age: float  # years
    std: float  # spread of the prediction, years (NaN where the head gives none)
    group: int  # Adience group: predicted (group heads) or the one the age falls in (age heads)
    p_male: float | None = None  # heads with a gender output only

    @property
    def group_name(self) -> str:
        return GROUP_NAMES[self.group]


def make_cropper(settings: dict, overrides: dict | None = None) -> FaceCropper:
    """A FaceCropper from the model's settings, with the user's non-null overrides."""
    settings = dict(settings)
    require_framing(settings)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in TUNABLE:
            raise ConfigError(f"faces.{key}: not a face setting predict can change (one of {', '.join(TUNABLE)})")
        settings[key] = value
    try:
        return FaceCropper(**settings)
    except ConfigError as exc:  # "<setting> must be ..."
        raise ConfigError(f"faces.{exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"faces: {exc}") from exc


class AgePredictor:
    """``faces(image)`` -> predictions for every face in an RGB photo; ``tta_flip`` averages each
    face's prediction with its mirror image's (every output is the mean of the two passes; the
    group is the most likely group of the mean probabilities)."""

    def __init__(self, backend, cropper: FaceCropper, tta_flip: bool = False):
        self.backend, self.cropper, self.tta_flip = backend, cropper, bool(tta_flip)

    @property
    def task(self) -> str:
        return self.backend.task

    def predict_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run a preprocessed (N, 3, S, S) batch, with the flip pass when asked."""
        out = self.backend.run(batch)
        if self.tta_flip and len(batch):
            mirrored = self.backend.run(np.ascontiguousarray(batch[..., ::-1]))
            out = {k: v if k == "group" else (np.asarray(v, np.float64) + mirrored[k]) / 2 for k, v in out.items()}
            if "probs" in out and "group" in out:
                out["group"] = out["probs"].argmax(axis=1)
        return out

    def predict_crops(self, crops: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self.predict_batch(self.backend.preprocess(crops))

    def faces(self, image_rgb: np.ndarray) -> tuple[list[FacePrediction], str | None]:
        """(predictions largest face first, None) or ([], why there is none: no_face/too_small/too_blurry)."""
        found, reason = self.cropper.crops(image_rgb)
        if not found:
            return [], reason
        out = self.predict_crops([f.crop for f in found])
        predictions = []
        for i, face in enumerate(found):
            age = float(out["age"][i])
            group = int(out["group"][i]) if "group" in out else int(age_to_group(age))
            predictions.append(FacePrediction(
                box=tuple(int(v) for v in face.box), score=float(face.score), age=age, std=float(out["std"][i]),
                group=group, p_male=float(out["p_male"][i]) if "p_male" in out else None))
        return predictions, None
