"""Whole photos in, every face's age out, as an MLflow model: what ``mlflow models serve`` answers
with the export's ``photo_model`` (the int8 ONNX model plus the face pipeline of ``agelab.predict``).

Input: a table with a column ``image``, each cell a photo file's bytes (base64 text over HTTP).
Output: one row per face (``image`` is the input row), largest face first, or one row with the
status of a photo that gave none: ``no_face``, ``too_small``, ``too_blurry``, ``unreadable``,
``too_large``. The model needs agelab where it is served (``--env-manager local``).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

ONNX_ARTIFACT = "onnx"
PHOTO_MODEL = "photo_model"  # its name in the run
COLUMNS = ("image", "face", "status", "x1", "y1", "x2", "y2", "score", "age", "std", "group", "p_male")


def photo_bytes(value) -> bytes | None:
    """A cell of the ``image`` column as the photo file's bytes: bytes as they are, text as base64."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


class PhotoAgeModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from agelab.inference.backends import OnnxBackend
        from agelab.inference.predictor import AgePredictor, make_cropper

        backend = OnnxBackend(context.artifacts[ONNX_ARTIFACT], threads=1)
        self.predictor = AgePredictor(backend, make_cropper(backend.face_settings))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from agelab.data.faces import UNREADABLE, read_image

        if "image" not in model_input:  # the server answers 400 with this line
            raise MlflowException("photo_model takes a column 'image': each cell a photo file's bytes, "
                                  "base64-encoded in JSON", error_code=INVALID_PARAMETER_VALUE)
        rows = []
        for index, value in enumerate(model_input["image"]):
            data = photo_bytes(value)
            # Through a file: the same decoding as prepare and predict (EXIF turn, alpha, bounded size).
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "photo"
                path.write_bytes(data or b"")
                image, status = read_image(path) if data else (None, UNREADABLE)
            faces, status = self.predictor.faces(image) if image is not None else ([], status)
            if not faces:
                rows.append({"image": index, "status": status})
            for number, face in enumerate(faces):
                x1, y1, x2, y2 = face.box
                rows.append({"image": index, "face": number, "status": "ok", "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                             "score": face.score, "age": face.age, "std": face.std, "group": face.group_name,
                             "p_male": np.nan if face.p_male is None else face.p_male})
        return pd.DataFrame(rows, columns=list(COLUMNS))


def log_photo_model(int8_onnx: str | Path, name: str = PHOTO_MODEL):
    """Log the photo model into the active MLflow run; returns MLflow's ModelInfo."""
    import onnxruntime

    return mlflow.pyfunc.log_model(
        name=name, python_model=PhotoAgeModel(), artifacts={ONNX_ARTIFACT: str(int8_onnx)},
        pip_requirements=[f"onnxruntime=={onnxruntime.__version__}", "opencv-python-headless>=4.9,<5",
                          "numpy", "pandas", "pillow", "omegaconf"])
