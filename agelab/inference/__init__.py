"""Age prediction on photos, folders and videos (``python -m agelab.predict``).

backends (PyTorch checkpoint, ONNX) -> predictor (the shared face cropper + a backend, flip
test-time augmentation) -> run (photos, folders, videos; results table; annotated outputs), with
smoothing (face tracks and moving-average ages on video) and drawing (boxes and labels).

Importing this package does not import PyTorch; only the checkpoint backend does.
"""

from agelab.inference.backends import OnnxBackend, TorchBackend, default_face_settings, load_backend
from agelab.inference.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, collect, collect_all
from agelab.inference.predictor import AgePredictor, FacePrediction, make_cropper
from agelab.inference.preprocess import eval_batch
from agelab.inference.results import COLUMNS, Report
from agelab.inference.run import predict_input
from agelab.inference.smoothing import FaceTracker, iou
from agelab.inference.video import VideoOptions

__all__ = [
    "OnnxBackend", "TorchBackend", "default_face_settings", "load_backend", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS",
    "collect", "collect_all", "AgePredictor", "FacePrediction", "make_cropper", "eval_batch", "COLUMNS", "Report", "predict_input",
    "FaceTracker", "iou", "VideoOptions",
]
