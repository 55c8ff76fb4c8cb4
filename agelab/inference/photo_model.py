"""Whole photos in, every face's age out, as an MLflow model: what ``mlflow models serve`` answers
with the export's ``photo_model`` (the int8 ONNX model plus ``agelab.predict``'s photo pipeline, with
its default settings: large photos searched at ``faces.detect_side``, boxes in the photo's pixels).

Input: a table with a column ``image``, each cell a photo file's bytes as base64 text (line breaks
and the URL-safe alphabet are accepted). Output: predict's rows for each photo (``image`` is the
input row): one per face, largest first, or one with the status of a photo that gave none
(``no_face``, ``too_small``, ``too_blurry``, ``unreadable``, ``too_large``, ``error``); values a row
does not have are null. The model needs agelab where it is served (``--env-manager local``).
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

ONNX_ARTIFACT = "onnx"
PHOTO_MODEL = "photo_model"  # its name in the run
INPUT_COLUMN = "image"
COLUMNS = ("image", "face", "status", "x1", "y1", "x2", "y2", "score", "age", "std", "group", "p_male")


def photo_bytes(value) -> bytes | None:
    """A cell of the ``image`` column as the photo file's bytes (None when it is not base64)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        return None
    text = re.sub(r"\s+", "", value).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True) or None
    except (binascii.Error, ValueError):
        return None


class PhotoAgeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from agelab.inference.backends import OnnxBackend
        from agelab.inference.predictor import AgePredictor, make_cropper

        backend = OnnxBackend(context.artifacts[ONNX_ARTIFACT], threads=1)
        self.predictor = AgePredictor(backend, make_cropper(backend.face_settings, dict(context.model_config or {})))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from agelab.data.images import UNREADABLE
        from agelab.inference.results import COLUMNS as PREDICT_COLUMNS
        from agelab.inference.results import status_row
        from agelab.inference.run import one_file, predict_photo

        rows = []  # (the signature makes MLflow refuse a request without the column, with a 400 naming it)
        for index, value in enumerate(model_input[INPUT_COLUMN]):
            data = photo_bytes(value)
            if data is None:
                rows.append(status_row(index, UNREADABLE))
                continue
            with tempfile.TemporaryDirectory() as folder:  # through a file: the decoding predict and prepare use
                path = Path(folder) / "photo"
                path.write_bytes(data)
                rows += one_file(str(index), predict_photo, self.predictor, path, index, None)[0]  # (row: index)
        # object columns: whole numbers stay whole and a missing value is null in the JSON answer
        table = pd.DataFrame(rows, columns=list(PREDICT_COLUMNS), dtype=object).rename(columns={"file": "image"})
        table["image"] = [int(v) for v in table["image"]]
        return table[list(COLUMNS)]


def log_photo_model(int8_onnx: str | Path, name: str = PHOTO_MODEL):
    """Log the photo model into the active MLflow run; returns MLflow's ModelInfo. The face search
    setting predict adds to a model's own (``faces.detect_side`` of conf/predict.yaml) travels with it."""
    import onnxruntime
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, Schema
    from omegaconf import OmegaConf

    from agelab.config import CONF_DIR

    search = OmegaConf.select(OmegaConf.load(CONF_DIR / "predict.yaml"), "faces.detect_side")
    return mlflow.pyfunc.log_model(
        name=name, python_model=PhotoAgeModel(), artifacts={ONNX_ARTIFACT: str(int8_onnx)},
        model_config={"detect_side": search},
        signature=ModelSignature(inputs=Schema([ColSpec("string", INPUT_COLUMN)])),
        pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", "opencv-python-headless>=4.9,<5",
                          "numpy", "pandas", "pillow", "omegaconf"])
