"""A page to try a model on your own photos: ``python -m agelab.demo [ckpt= | onnx= | model_uri=] [port=8000]``.

Serves one page at http://<host>:<port> where photos are dropped or chosen (or taken with the webcam
where the browser allows) and each face is boxed with its age and spread. The model is chosen as
predict chooses it (the registered champion by default, agelab.predict.chosen_model) and every photo
goes through predict's own path (agelab.inference.run.predict_photo). Flask comes with MLflow; the
page needs nothing from the network.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from agelab.cli import run_main, run_or_exit
from agelab.config import CONF_DIR
from agelab.errors import require_int

log = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "inference" / "demo.html"


def make_app(predictor, model_name: str, max_upload_mb: int):
    """The Flask app: ``GET /`` the page, ``POST /predict`` photos (form field ``photo``, one or more) ->
    ``{"photos": [{"name", "status", "faces": [{x1, y1, x2, y2, age, std, group}]}]}`` in their order."""
    from flask import Flask, jsonify, request

    from agelab.inference.run import one_file, predict_photo

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_mb << 20
    page = PAGE.read_text(encoding="utf-8").replace("{{ model }}", model_name.replace("<", "&lt;"))

    @app.get("/")
    def index():
        return page

    @app.post("/predict")
    def predict():
        answers = []
        for upload in request.files.getlist("photo"):
            name = upload.filename or "photo"
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / ("photo" + Path(name).suffix.lower()[:8])
                upload.save(path)
                rows, status = one_file(name, predict_photo, predictor, path, name, None)
            faces = [{**{k: row[k] for k in ("x1", "y1", "x2", "y2", "age", "std")},
                      "group": row["group"] if predictor.task == "group" else None}  # (an age head's is its age's)
                     for row in rows if row["status"] == "ok"]
            answers.append({"name": name, "status": status, "faces": faces})
        if not answers:
            return jsonify(error="no photo in the request (form field 'photo')"), 400
        return jsonify(photos=answers)

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the upload is larger than {max_upload_mb} MB (max_upload_mb)"), 413

    return app


def demo_app(cfg: DictConfig):
    """The app for the config's model, face settings and limits (the server is started by ``main``)."""
    from agelab.inference import AgePredictor, make_cropper
    from agelab.predict import load_model

    require_int("port", cfg.port, 0)
    require_int("max_upload_mb", cfg.max_upload_mb, 1)
    backend, description = load_model(cfg)
    cropper = make_cropper(backend.face_settings, OmegaConf.to_container(cfg.faces, resolve=True))
    return make_app(AgePredictor(backend, cropper, tta_flip=bool(cfg.tta_flip)), description, int(cfg.max_upload_mb))


def serve(cfg: DictConfig) -> None:
    from werkzeug.serving import make_server

    server = make_server(str(cfg.host), int(cfg.port), demo_app(cfg), threaded=False)
    print(f"agelab demo on http://{cfg.host}:{server.server_port} (Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="demo")
def main(cfg: DictConfig) -> None:
    run_or_exit(serve, cfg)


if __name__ == "__main__":
    run_main(main, "demo")
