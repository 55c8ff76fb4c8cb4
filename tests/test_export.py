"""Export: ONNX fp32 / int8 and TorchScript agree with PyTorch; the callback, the CLI and the
MLflow registry record them. One tiny training (with callbacks=export) serves the whole file."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from agelab.checkpoint import load_module
from agelab.cli import run_or_exit
from agelab.errors import ConfigError
from agelab.export import export
from agelab.exporting import (ExportableAgeModel, agreement, calibration_images, export_onnx, export_torchscript,
                              ort_runner, quantize_int8, torch_runner, torchscript_runner)
from agelab.exporting.mlflow_log import register_onnx
from agelab.exporting.pipeline import ExportResult, eval_batches, eval_dataset
from agelab.exporting.runners import torch_threads
from agelab.tracking import RUN_ID_KEY
from agelab.training import train

from conftest import TINY, compose_config

EXPORT_FILES = {"model.onnx", "model.int8.onnx", "model.ts"}
# Fewer faces than TINY (under 500 in all: generated in-process, no worker pool to start).
SMALLER = ["data.source.train_size=256", "data.source.val_size=64", "data.source.test_size=96"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = compose_config(root, [*TINY, *SMALLER, "trainer.max_epochs=1", "callbacks=export",
                                "callbacks.export.calibration_size=32", "callbacks.export.latency_runs=2",
                                "callbacks.export.latency_warmup=1"])
    metrics = train(cfg)
    module, stored = load_module(metrics["best_model_path"])
    datamodule = instantiate(stored.data)
    client = MlflowClient(f"sqlite:///{root.resolve() / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])[0]
    return SimpleNamespace(root=root, ckpt=metrics["best_model_path"], metrics=metrics, module=module, cfg=stored,
                           datamodule=datamodule, client=client, run=run, export_dir=root / "output" / "export")


def faces(trained, count=8) -> np.ndarray:
    dataset = eval_dataset(trained.datamodule, "test")
    return np.stack([dataset[i]["image"].numpy() for i in range(count)])


def test_fp32_onnx_and_torchscript_agree_with_pytorch(trained, tmp_path):
    images = faces(trained)
    wrapper = ExportableAgeModel.from_module(trained.module)
    assert wrapper.output_names == ("age", "std")
    path = export_onnx(trained.module, tmp_path / "model.onnx", 64)
    graph = onnx.load(str(path))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no external data
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)

    reference = trained.module(torch.from_numpy(images))  # the AgeModule's own decoding
    age, std = ort_runner(path)(images)
    assert np.max(np.abs(age - reference["age"].detach().numpy())) < 1e-4
    assert np.max(np.abs(std - reference["std"].detach().numpy())) < 1e-4
    # Dynamic batch axis: one face alone gives the same answer as inside the batch.
    assert abs(ort_runner(path)(images[:1])[0][0] - age[0]) < 1e-4

    ts = torchscript_runner(export_torchscript(trained.module, tmp_path / "model.ts", 64))(images)
    eager = torch_runner(wrapper)(images)
    for ours, ref in zip(ts, eager):
        assert np.max(np.abs(ours - ref)) < 1e-5


def test_int8_is_under_half_the_size_and_close_in_mae(trained, tmp_path):
    fp32 = export_onnx(trained.module, tmp_path / "model.onnx", 64)
    calibration = calibration_images(trained.datamodule, 32)
    assert calibration.shape == (32, 3, 64, 64) and -1.0 <= calibration.min() < calibration.max() <= 1.0
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx", calibration)
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    nodes = onnx.load(str(int8)).graph.node
    ops = [node.op_type for node in nodes]
    assert ops.count("DequantizeLinear") > ops.count("Conv") > 0  # int8 weights and activations
    producer = {out: node.op_type for node in nodes for out in node.output}
    softmax = next(node for node in nodes if node.op_type == "Softmax")
    assert producer[softmax.input[0]] == "Gemm"  # the logits stay fp32: no Q/DQ before the decoding

    wrapper = ExportableAgeModel.from_module(trained.module)
    with torch_threads(1):
        found = agreement({"torch": torch_runner(wrapper), "int8": ort_runner(int8, threads=1)},
                          eval_batches(trained.datamodule, 32), limit=64)
    assert found["count"] == 64
    assert math.isfinite(found["int8_mae_delta"]) and abs(found["int8_mae_delta"]) < 1.0
    assert found["int8_mae"] == pytest.approx(found["torch_mae"] + found["int8_mae_delta"])
    assert 0 < found["int8_max_abs_diff"] < 5.0  # quantized, so not bit-equal, but near


def test_agreement_scores_only_faces_with_an_age():
    runners = {"torch": lambda images: (np.full(len(images), 30.0, np.float32),),
               "onnx": lambda images: (np.full(len(images), 31.0, np.float32),)}
    batch = {"image": np.zeros((3, 3, 4, 4), np.float32), "age": np.array([20.0, np.nan, 30.0])}
    found = agreement(runners, [batch])
    assert (found["torch_mae"], found["onnx_mae"], found["onnx_mae_delta"]) == (5.0, 6.0, 1.0)
    assert found["count"] == 3.0 and found["onnx_max_abs_diff"] == 1.0


def test_callback_exports_the_best_checkpoint_into_the_training_run(trained):
    assert EXPORT_FILES <= {p.name for p in trained.export_dir.iterdir()}
    client, run_id = trained.client, trained.run.info.run_id
    assert {a.path for a in client.list_artifacts(run_id, "export")} == {f"export/{f}" for f in [*EXPORT_FILES, "report.txt"]}
    metrics = client.get_run(run_id).data.metrics
    assert metrics["export/fp32_max_abs_diff"] < 1e-4
    assert metrics["export/torchscript_max_abs_diff"] < 1e-5
    assert metrics["export/int8_mb"] < 0.5 * metrics["export/fp32_mb"]
    assert math.isfinite(metrics["export/int8_mae_delta"])
    assert metrics["export/check_faces"] == 96  # the whole test split
    assert metrics["export/calibration_faces"] == 32
    assert 300_000 < metrics["export/num_params"] < 400_000  # smlf_small with the 101-way DEX head
    for name in ("fp32_torch", "fp32_onnx", "int8_onnx"):
        assert 0 < metrics[f"export/latency_ms_{name}"] < math.inf
    # The exported model is the tested one: its MAE is the run's test MAE.
    assert metrics["export/torch_mae"] == pytest.approx(metrics["test/mae"], abs=1e-3)

    version = client.get_model_version_by_alias("agelab-age", "champion")
    assert version.run_id == run_id
    assert float(version.tags["test_mae"]) == pytest.approx(metrics["export/fp32_mae"], abs=1e-5)


def load_served(trained, uri: str):
    """``uri`` loaded from the fixture's store as ``mlflow models serve`` would load it."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{trained.root.resolve() / 'mlflow.db'}")
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(before)


def test_photo_model_answers_whole_photos_as_predict_does(trained, tmp_path):
    import base64

    import cv2
    import pandas as pd

    from agelab.bench.prepare import write_photos
    from agelab.data.images import read_image
    from agelab.inference import AgePredictor, OnnxBackend, make_cropper

    backend = OnnxBackend(trained.export_dir / "model.int8.onnx", threads=1)
    predictor = AgePredictor(backend, make_cropper(backend.face_settings))
    photo = write_photos(tmp_path, 1, 320, predictor.cropper)["path"][0]  # a face the detector finds
    expected, _ = predictor.faces(read_image(photo)[0])
    blank = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes()

    def text(data: bytes) -> str:
        return base64.b64encode(data).decode()

    served = load_served(trained, trained.run.data.tags["export.photo_model"])
    wrapped = base64.encodebytes(Path(photo).read_bytes()).decode()  # `base64 photo.jpg`: lines of 76
    answer = served.predict(pd.DataFrame({"image": [text(Path(photo).read_bytes()), text(blank), "not base64!",
                                                    text(b"not a photo"), wrapped]}))
    faces = answer[answer["image"] == 0]
    assert list(faces["status"]) == ["ok"] * len(expected) and len(expected) >= 1
    assert np.allclose(faces["age"].astype(float), [f.age for f in expected], atol=1e-4)
    assert list(faces[["x1", "y1", "x2", "y2"]].iloc[0]) == list(expected[0].box)
    assert all(type(v) is int for v in faces[["face", "x1", "y2"]].iloc[0])  # whole, also beside status rows
    assert list(answer[answer["image"].isin([1, 2, 3])]["status"]) == ["no_face", "unreadable", "unreadable"]
    assert answer["age"][answer["image"] == 1].tolist() == [None]  # null in JSON, not NaN
    assert list(answer[answer["image"] == 4]["age"]) == list(faces["age"])
    # A photo larger than predict's face search (detect_side 1280): searched as predict does, boxes in its pixels.
    from agelab.inference.run import predict_photo

    big = tmp_path / "big.jpg"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(photo), (2000, 2000)))
    searched = AgePredictor(backend, make_cropper(backend.face_settings, {"detect_side": 1280}))
    rows = predict_photo(searched, big, "big", None)[0]
    answer = served.predict(pd.DataFrame({"image": [text(big.read_bytes())]}))
    scale = 2000 / read_image(photo)[0].shape[1]  # boxes in the big photo's pixels
    assert [r["x2"] for r in rows] == list(answer["x2"])
    assert answer["x2"].iloc[0] == pytest.approx(expected[0].box[2] * scale, rel=0.1)
    # A photo whose prediction fails is an error row; the other photos keep their answers.
    model = served.unwrap_python_model()
    model.predictor.backend.run, working = (lambda batch: 1 / 0), model.predictor.backend.run
    try:
        failed = served.predict(pd.DataFrame({"image": [text(Path(photo).read_bytes()), text(blank)]}))
    finally:
        model.predictor.backend.run = working
    assert list(failed["status"]) == ["error", "no_face"] and list(failed["image"]) == [0, 1]
    with pytest.raises(Exception, match=r"missing inputs \['image'\]"):
        served.predict(pd.DataFrame({"photo": [text(blank)]}))


def test_predict_without_a_model_takes_the_registered_champion(trained, tmp_path, capsys):
    import pandas as pd

    from agelab.bench.prepare import write_photos
    from agelab.data.images import read_image
    from agelab.inference import AgePredictor, OnnxBackend, make_cropper
    from agelab.predict import predict

    fp32 = OnnxBackend(trained.export_dir / "model.onnx", threads=1)
    photo = write_photos(tmp_path, 1, 320, make_cropper(fp32.face_settings))["path"][0]
    expected, _ = AgePredictor(fp32, make_cropper(fp32.face_settings)).faces(read_image(photo)[0])
    champion = trained.client.get_model_version_by_alias("agelab-age", "champion")
    run_id = trained.run.info.run_id
    best = next(a.path for a in trained.client.list_artifacts(run_id, "checkpoints"))

    def run(*overrides):
        out = tmp_path / f"out{len(overrides)}"
        predict(compose_config(trained.root, [f"input={photo}", f"out_dir={out}", "annotate=false", *overrides],
                               config_name="predict"))
        return capsys.readouterr().out.splitlines()[0], pd.read_csv(out / "results.csv")

    said, table = run()
    assert said == f"model: agelab-age version {champion.version} (champion), from run {run_id}"
    np.testing.assert_allclose(table.age, [f.age for f in expected], atol=1e-3)  # the registered fp32 ONNX
    said, _ = run(f"model_uri=agelab-age@{champion.version}")
    assert said == f"model: agelab-age version {champion.version}, from run {run_id}"
    said, table = run(f"model_uri=runs:/{run_id}/{best}", "device=cpu")
    assert said == f"model: runs:/{run_id}/{best}" and len(table) == len(expected)
    for model, message in [("models:/agelab-age@nobody", "^model_uri=agelab-age@nobody: not in the registry of sqlite"),
                           (f"runs:/{run_id}/../../../etc/passwd", "^runs:/.*/etc/passwd: not a run artifact"),
                           ("plain", "^model_uri=plain: expected <registered name>@<alias or version>")]:
        with pytest.raises(ConfigError, match=message):
            run(f"model_uri={model}")
    assert not (trained.root / "etc").exists() and not list(tmp_path.rglob("passwd"))


def test_registered_model_serves_the_trained_ages(trained):
    """What `mlflow models serve -m models:/agelab-age@champion` answers: the module's ages for cropped,
    normalised faces (the README's serving example)."""
    served = load_served(trained, "models:/agelab-age@champion")
    images = next(iter(eval_batches(trained.datamodule, batch_size=8)))["image"]
    answer = served.predict({"images": images.numpy()})
    with torch.no_grad():
        expected = ExportableAgeModel.from_module(trained.module)(images)[0].numpy()
    assert set(answer) == {"age", "std"} and answer["age"].shape == (len(images),)
    assert np.abs(answer["age"] - expected).max() < 1e-3
    wild = served.predict({"images": np.full((1, 3, 64, 64), 1e308, np.float32)})  # inf in float32
    assert np.isfinite(wild["age"]).all() and np.isfinite(wild["std"]).all()  # valid JSON: no NaN


def test_onnx_files_carry_the_training_crop_for_predict(trained):
    from agelab.inference.backends import CROPPER_METADATA, OnnxBackend, checkpoint_face_settings

    expected = checkpoint_face_settings(trained.cfg)
    for name in ("model.onnx", "model.int8.onnx"):
        backend = OnnxBackend(trained.export_dir / name)
        assert backend.face_settings == expected
        assert CROPPER_METADATA in backend.session.get_modelmeta().custom_metadata_map
    assert expected["output_size"] == 73  # the eval transform's margin around the 64-pixel crop


def test_registry_moves_champion_only_to_a_better_version(trained):
    uri = trained.client.tracking_uri
    run_id = trained.run.info.run_id
    holder = trained.client.get_model_version_by_alias("agelab-age", "champion")
    champion, faces = str(holder.version), holder.tags["test_set"]
    assert faces.endswith("(96 faces)")  # the whole test split of the training run's data
    result = ExportResult(trained.export_dir, {"fp32": trained.export_dir / "model.onnx"},
                          metrics={"export/fp32_mae": 1000.0}, test_set=faces)
    worse = register_onnx(uri, run_id, result, "agelab-age", 64)
    assert not worse["champion"] and int(worse["version"]) > int(champion)
    assert str(trained.client.get_model_version_by_alias("agelab-age", "champion").version) == champion
    result.metrics["export/fp32_mae"] = 0.5
    better = register_onnx(uri, run_id, result, "agelab-age", 64)
    assert better["champion"]
    assert str(trained.client.get_model_version_by_alias("agelab-age", "champion").version) == better["version"]
    assert trained.client.get_model_version("agelab-age", better["version"]).tags["test_mae"] == "0.500000"
    # Scores over other faces (another dataset, a partial check) or by another score are not compared:
    # the alias stays, however good they look.
    other_faces = ExportResult(trained.export_dir, {"fp32": trained.export_dir / "model.onnx"},
                               metrics={"export/fp32_mae": 0.1}, test_set=faces.replace("96", "8"))
    groups = ExportResult(trained.export_dir, {"fp32": trained.export_dir / "model.onnx"},
                          metrics={"export/fp32_accuracy": 1.0}, task="group", outputs=("probs",), test_set=faces)
    for result in (other_faces, groups):
        assert not register_onnx(uri, run_id, result, "agelab-age", 64)["champion"]
        assert str(trained.client.get_model_version_by_alias("agelab-age", "champion").version) == better["version"]
    # A holder registered before versions carried test_set gives way (its score cannot be compared).
    trained.client.delete_model_version_tag("agelab-age", better["version"], "test_set")
    assert register_onnx(uri, run_id, other_faces, "agelab-age", 64)["champion"]


def export_cfg(trained, out_dir, *overrides):
    return compose_config(trained.root, [f"out_dir={out_dir}", "calibration_size=16", "check_size=32",
                                         "latency_runs=0", *overrides], config_name="export")


def test_cli_logs_into_the_checkpoint_run_or_a_new_one(trained, tmp_path):
    result = export(export_cfg(trained, tmp_path / "a", f"ckpt={trained.ckpt}", "registered_model_name=null"))
    assert {p.name for p in result.out_dir.iterdir()} == EXPORT_FILES
    assert result.metrics["export/check_faces"] == 32
    run = trained.client.get_run(trained.run.info.run_id)  # the run that wrote the checkpoint
    assert run.data.tags["export.ckpt"] == str(Path(trained.ckpt).resolve())
    assert run.data.metrics["export/check_faces"] == 32  # the latest export's value
    assert math.isnan(run.data.metrics["export/latency_ms_int8_onnx"])  # not measured this time: no stale figure

    checkpoint = torch.load(trained.ckpt, weights_only=True)
    checkpoint.pop(RUN_ID_KEY)
    orphan = tmp_path / "orphan.ckpt"
    torch.save(checkpoint, orphan)
    export(export_cfg(trained, tmp_path / "b", f"ckpt={orphan}", "registered_model_name=null"))
    experiment = trained.client.get_experiment_by_name("agelab-export")
    runs = trained.client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["export/fp32_max_abs_diff"] < 1e-4
    assert runs[0].info.status == "FINISHED"  # its own run is ended (the training run keeps its status)
    with pytest.raises(ConfigError, match="out_dir: cannot create"):  # before any work
        export(export_cfg(trained, tmp_path / "c", f"ckpt={orphan}", f"out_dir={orphan}/inside"))
    assert {a.path for a in trained.client.list_artifacts(runs[0].info.run_id, "export")} >= {"export/model.onnx"}


class TinyBackbone(torch.nn.Module):
    """A stand-in backbone (8x8 input, 16 features): the head's decoding is under test."""

    out_features, input_size = 16, 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 8)

    def forward(self, images):
        return self.conv(images).flatten(1)


@pytest.mark.parametrize("head", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "head").glob("*.yaml")))
def test_every_head_exports_with_its_decoding_in_the_graph(tmp_path, head):
    cfg = compose_config(tmp_path, [f"head={head}"])
    torch.manual_seed(0)
    wrapper = ExportableAgeModel(TinyBackbone(), instantiate(cfg.head, in_features=16)).eval()
    images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    outputs = ort_runner(export_onnx(wrapper, tmp_path / "model.onnx", 8))(images)
    assert len(outputs) == len(wrapper.output_names) >= 1
    for ours, ref in zip(outputs, torch_runner(wrapper)(images)):
        assert ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)  # NaN (no spread) matches NaN


@pytest.mark.parametrize("ckpt, message", [(None, "ckpt: give the checkpoint"), ("missing.ckpt", "no checkpoint at"),
                                           ("bad.ckpt", "bad.ckpt: not a PyTorch checkpoint"),
                                           ("model.onnx", "model.onnx: an ONNX model, not a checkpoint"),
                                           ("model.ts", "model.ts: a TorchScript model, not a checkpoint")])
def test_cli_errors_are_one_line(trained, tmp_path, capsys, ckpt, message):
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), tmp_path / "model.ts")
    overrides = [f"ckpt={tmp_path / ckpt}"] if ckpt else []
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(export, export_cfg(trained, tmp_path / "out", *overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
