"""The demo page: photos in, each face boxed with its age, through predict's own pipeline; a broken
file gets a readable answer. The browser test drives headless Chromium on a real photo."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from agelab.bench.predict import untrained_onnx
from agelab.bench.prepare import write_photos
from agelab.data.images import read_image
from agelab.demo import demo_app
from agelab.inference import AgePredictor, OnnxBackend, make_cropper

from conftest import compose_config
from mlflow_ui_support import chrome_driver, find_chromium

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realfaces"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return untrained_onnx(tmp_path_factory.mktemp("demo"))  # its speed and outputs' shapes are a trained one's


@pytest.fixture(scope="module")
def app(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_app")
    return demo_app(compose_config(root, [f"onnx={model}", "max_upload_mb=1"], config_name="demo"))


def test_photos_in_faces_and_ages_out_as_predict_gives_them(app, model, tmp_path):
    backend = OnnxBackend(model)
    photo = Path(write_photos(tmp_path, 1, 320, make_cropper(backend.face_settings))["path"][0])
    expected, _ = AgePredictor(backend, make_cropper(backend.face_settings)).faces(read_image(photo)[0])
    client = app.test_client()
    assert b"Model: " in client.get("/").data and str(model).encode() in client.get("/").data
    answer = client.post("/predict", data={"photo": [(io.BytesIO(photo.read_bytes()), "me.jpg"),
                                                     (io.BytesIO(b"not a photo"), "notes.jpg"),
                                                     (io.BytesIO(cv2.imencode(".png", np.full((90, 90, 3), 99, np.uint8))[1].tobytes()), "wall.png")]},
                         content_type="multipart/form-data")
    assert answer.status_code == 200
    photos = answer.get_json()["photos"]
    assert [(p["name"], p["status"]) for p in photos] == [("me.jpg", "ok"), ("notes.jpg", "unreadable"),
                                                          ("wall.png", "no_face")]
    assert [f["age"] for f in photos[0]["faces"]] == pytest.approx([f.age for f in expected], abs=1e-3)
    assert [[f[k] for k in ("x1", "y1", "x2", "y2")] for f in photos[0]["faces"]] == [list(f.box) for f in expected]
    assert photos[1]["faces"] == [] and photos[2]["faces"] == []
    missing = client.post("/predict", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.get_json() == {"error": "no photo in the request (form field 'photo')"}
    big = client.post("/predict", data={"photo": (io.BytesIO(b"x" * (2 << 20)), "big.jpg")},
                      content_type="multipart/form-data")
    assert big.status_code == 413 and big.get_json() == {"error": "the upload is larger than 1 MB (max_upload_mb)"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = find_chromium()
    if not (chromium and chromedriver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed (README, Tests)")
        pytest.skip("chromium and chromedriver are not installed")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # selenium-manager: never fetch a driver or a browser
        driver = chrome_driver(chromium, chromedriver, tmp_path_factory.mktemp("chromium"))
        try:
            yield driver
        finally:
            driver.quit()


def test_page_in_chromium_boxes_a_real_face_and_explains_a_broken_file(app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    if not REAL.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{REAL} is missing: the real-face tests must run in CI")
        pytest.skip(f"{REAL} is absent (real faces for development)")
    labels = pd.read_csv(REAL / "aaf_photos" / "labels.csv")
    photo = REAL / "aaf_photos" / labels["path"].iloc[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:200])
    server = make_server("127.0.0.1", 0, app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/")
        browser.find_element(By.ID, "photos").send_keys(str(photo))
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "canvas[data-faces]"))
        caption = browser.find_element(By.CSS_SELECTOR, "figure.photo figcaption").text
        assert caption.startswith(f"{photo.name}: ") and any(c.isdigit() for c in caption)  # "34 ± 9"
        assert browser.find_element(By.CSS_SELECTOR, "canvas[data-faces]").get_attribute("data-faces") == "1"
        browser.find_element(By.ID, "photos").send_keys(str(broken))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.photo")) == 2)
        assert browser.find_element(By.CSS_SELECTOR, "figure.photo figcaption.problem").text == \
            "broken.jpg: not a photo that can be read"
    finally:
        server.shutdown()
