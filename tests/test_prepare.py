"""Prepare: records -> face cache (round trip, drop counts, resume, reuse, parallel), the source, the CLI."""

from __future__ import annotations

import logging

import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agelab.data import prepare_cache as engine
from agelab.data.cache import load_cache
from agelab.data.faces import FaceCropper
from agelab.data.images import read_image
from agelab.data.prepare_cache import prepare_cache
from agelab.data.prepared import PreparedSource
from agelab.errors import DataError

from conftest import compose_config
from test_faces import draw_face

CROPPER = FaceCropper(output_size=48, min_sharpness=60.0, min_face_size=40)
real_crop_shard = engine.crop_shard
EXPECTED_DROPS = {"unreadable": 3, "no_face": 3, "too_blurry": 1}


def write_dataset(folder: Path) -> pd.DataFrame:
    """14 good faces and 7 bad images (reasons in EXPECTED_DROPS), interleaved, as reader records."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, bad = [], iter([
        ("blank.png", np.full((120, 120, 3), 100, np.uint8)),
        ("empty.jpg", b""),
        ("noise.png", np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)),
        ("text.jpg", b"no pixels here"),
        ("tiny.png", draw_face(120, 20)),  # a ~25 px face: below min_face_size, not searched for
        ("missing.jpg", None),
        ("blurred.png", draw_face(160, 70, blur=3.0)),
    ])
    for i in range(21):
        if i % 3 == 1:
            name, content = next(bad)
        else:
            name, content = f"face{i:02d}.jpg", draw_face(160, 50 + 2 * i, (80 + i % 5, 78 + i % 4), seed=i)
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            Image.fromarray(content).save(path, quality=95)
        rows.append({"path": str(path), "age": float(20 + i), "group": i % 8, "subject": f"p{i}"})
    return pd.DataFrame(rows)


def is_face(path: str) -> bool:
    return Path(path).name.startswith("face")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pd.DataFrame:
    return write_dataset(tmp_path_factory.mktemp("faces"))


def test_round_trip_gives_the_croppers_faces_and_counts_drops(dataset, tmp_path):
    result = prepare_cache(dataset, tmp_path / "cache", CROPPER, workers=1, shard_size=4, progress=False)
    assert dict(result.dropped) == EXPECTED_DROPS
    assert result.kept == len(dataset) - sum(EXPECTED_DROPS.values()) == 14
    assert not result.reused
    records = result.records
    assert list(records.index) == list(range(14))
    assert records["path"].map(is_face).all()
    np.testing.assert_array_equal(dataset.loc[records["source_index"], "path"], records["path"])
    assert {"age", "group", "subject", "face_x1", "face_y2", "detect_score"} <= set(records.columns)
    assert result.images.shape == (14, 48, 48, 3) and result.images.dtype == np.uint8
    for i, row in records.iterrows():
        face, reason = CROPPER.largest(read_image(row["path"])[0])
        np.testing.assert_array_equal(result.images[i], face.crop)
        assert (row["face_x1"], row["face_y1"], row["face_x2"], row["face_y2"]) == face.box

    folder = tmp_path / "cache"
    images, stored = load_cache(folder)  # the ordinary cache layout
    np.testing.assert_array_equal(images, result.images)
    assert list(stored["source_index"]) == list(records["source_index"])
    assert json.loads((folder / "dropped.json").read_text()) == EXPECTED_DROPS
    bad = dataset[~dataset["path"].map(is_face)]["path"].tolist()  # in dataset order, as they were cropped
    reasons = ["no_face", "unreadable", "no_face", "unreadable", "no_face", "unreadable", "too_blurry"]
    expected = pd.DataFrame({"path": bad, "reason": reasons})  # each dropped image named, with its reason
    pd.testing.assert_frame_equal(pd.read_csv(folder / "dropped_faces.csv"), expected)
    pd.testing.assert_frame_equal(result.drops, expected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kept"] == 14 and manifest["records"] == 21 and manifest["cropper"] == CROPPER.settings()
    assert not (folder / "shards").exists()  # spent once packed


def test_a_second_run_reuses_the_cache_and_new_settings_rebuild(dataset, tmp_path, monkeypatch):
    first = prepare_cache(dataset, tmp_path, CROPPER, workers=1, progress=False)
    monkeypatch.setattr(engine, "crop_shard", lambda *a: pytest.fail("a reused cache must not crop again"))
    start = time.perf_counter()
    again = prepare_cache(dataset, tmp_path, CROPPER, workers=1, progress=False)
    assert again.reused and time.perf_counter() - start < 1.0
    np.testing.assert_array_equal(again.images, first.images)
    pd.testing.assert_frame_equal(again.records, first.records)
    assert again.dropped == first.dropped
    pd.testing.assert_frame_equal(again.drops, first.drops)  # reused with the cache

    relabelled = dataset.assign(age=dataset["age"] + 1)  # labels are not crops: reused, new labels
    fixed = prepare_cache(relabelled, tmp_path, CROPPER, workers=1, progress=False)
    assert fixed.reused and (fixed.records["age"] == first.records["age"] + 1).all()
    assert (load_cache(tmp_path)[1]["age"] == fixed.records["age"]).all()

    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(engine, "crop_shard", lambda *a: (calls.append(1), real_crop_shard(*a))[1])
    bigger = FaceCropper(output_size=32, min_sharpness=60.0, min_face_size=40)
    rebuilt = prepare_cache(dataset, tmp_path, bigger, workers=1, progress=False)
    assert not rebuilt.reused and calls and rebuilt.images.shape[1:] == (32, 32, 3)
    fewer = prepare_cache(dataset.iloc[:9], tmp_path, bigger, workers=1, progress=False)
    assert not fewer.reused and fewer.kept == 6


def test_a_killed_run_resumes_with_only_the_missing_shards(dataset, tmp_path, monkeypatch):
    done = []

    def dies_on_third(cropper, paths, boxes, out_path):
        if out_path.endswith("shard_000002.npz"):
            raise KeyboardInterrupt  # as if killed while cropping shard 2
        done.append(Path(out_path).name)
        return real_crop_shard(cropper, paths, boxes, out_path)

    monkeypatch.setattr(engine, "crop_shard", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(dataset, tmp_path / "cache", CROPPER, workers=1, shard_size=4, progress=False)
    shards = sorted(p.name for p in (tmp_path / "cache").rglob("shard_*"))
    assert shards == ["shard_000000.npz", "shard_000001.npz"]  # whole shards only, no temporary files
    assert not (tmp_path / "cache" / "manifest.json").exists()

    done.clear()
    monkeypatch.setattr(engine, "crop_shard", lambda *a: (done.append(Path(a[3]).name), real_crop_shard(*a))[1])
    resumed = prepare_cache(dataset, tmp_path / "cache", CROPPER, workers=1, shard_size=4, progress=False)
    assert done == ["shard_000002.npz", "shard_000003.npz", "shard_000004.npz", "shard_000005.npz"]
    fresh = prepare_cache(dataset, tmp_path / "fresh", CROPPER, workers=1, shard_size=4, progress=False)
    np.testing.assert_array_equal(resumed.images, fresh.images)
    pd.testing.assert_frame_equal(resumed.records, fresh.records)
    assert resumed.dropped == fresh.dropped


def test_parallel_workers_give_the_serial_result(dataset, tmp_path, caplog):
    data = bytearray(Path(dataset.path[0]).read_bytes())
    data[len(data) // 2:len(data) // 2 + 40] = bytes(40)  # damaged, but libjpeg still decodes it
    (tmp_path / "damaged.jpg").write_bytes(bytes(data))
    dataset = pd.concat([dataset, dataset.head(1).assign(path=str(tmp_path / "damaged.jpg"))], ignore_index=True)
    warned = {}
    for workers in (1, 2):
        caplog.clear()
        with caplog.at_level("INFO"):
            result = prepare_cache(dataset, tmp_path / f"w{workers}", CROPPER, workers=workers, shard_size=5,
                                   progress=False)
        warned[workers] = [r.getMessage() for r in caplog.records if "Corrupt JPEG" in r.getMessage()]
        if workers == 1:
            serial = result
    parallel = result
    np.testing.assert_array_equal(parallel.images, serial.images)
    pd.testing.assert_frame_equal(parallel.records, serial.records)
    assert parallel.dropped == serial.dropped
    # what a spawned worker logs reaches the parent's log, with the file it is about
    assert len(warned[2]) == 1 and warned[2] == warned[1]
    assert warned[2][0].startswith(f"{tmp_path / 'damaged.jpg'}: Corrupt JPEG data")


def test_dataset_boxes_are_used_and_nothing_kept_is_an_error(dataset, tmp_path):
    faces_only = dataset[dataset["path"].map(is_face)].reset_index(drop=True)
    boxed = faces_only.assign(box_x1=0.0, box_y1=0.0, box_x2=40.0, box_y2=40.0)  # boxes away from the faces
    boxed.loc[0, ["box_x1", "box_y1", "box_x2", "box_y2"]] = np.nan  # no box: search the whole image
    result = prepare_cache(boxed, tmp_path / "boxed", CROPPER, workers=1, progress=False)
    assert result.kept == 1 and dict(result.dropped) == {"no_face": len(boxed) - 1}
    bad = dataset[~dataset["path"].map(is_face)]
    with pytest.raises(DataError, match="no face kept out of 7"):
        prepare_cache(bad, tmp_path / "bad", CROPPER, workers=1, progress=False)
    with pytest.raises(DataError, match="'path' column"):
        prepare_cache(dataset.drop(columns="path"), tmp_path / "x", CROPPER, progress=False)


# ----------------------------------------------------------------------------- PreparedSource


def half_split(records: pd.DataFrame) -> pd.DataFrame:
    out = records.copy()
    out["split"] = np.where(np.arange(len(out)) % 3 == 0, "test", np.where(np.arange(len(out)) % 3 == 1, "val", "train"))
    return out


def double_train(train: pd.DataFrame):
    return pd.concat([train, train]), pd.DataFrame({"before": [len(train)], "after": [2 * len(train)]})


def test_prepared_source_reads_crops_splits_and_balances(dataset, tmp_path):
    reader = lambda: SimpleNamespace(records=dataset, dropped=Counter({"bad_age": 2, "unreadable": 1}))  # noqa: E731
    source = PreparedSource(reader, CROPPER, tmp_path, half_split, balance=double_train, name="toy", workers=1,
                            progress=False)
    drops = source.prepare()
    assert drops == {**EXPECTED_DROPS, "bad_age": 2, "unreadable": 4}
    assert len(source.drops) == 7  # the reader gave counts only: the face pipeline's drops are named
    pd.testing.assert_frame_equal(pd.read_csv(source.folder / "dropped.csv"), source.drops)
    assert source.drop_counts == drops and source.kept == 14
    assert source.folder.parent == tmp_path and source.folder.name.startswith("toy-")

    images, records = source.load()
    assert images.shape[0] == 14
    counts = records["split"].value_counts().to_dict()
    assert counts == {"train": 8, "test": 5, "val": 5}  # 4 train rows, doubled
    train = records[records["split"] == "train"]
    assert train.index.duplicated().sum() == 4 and train.index.max() < 14  # copies point at the same crops
    assert source.balance_report["after"].item() == 8

    other = PreparedSource(reader, FaceCropper(output_size=40, min_sharpness=60.0), tmp_path, half_split, name="toy",
                           workers=1, progress=False)
    other.prepare()
    assert other.folder != source.folder and len(list(tmp_path.glob("toy-*"))) == 2  # one cache per setting


# ----------------------------------------------------------------------------------- the CLI


def test_prepare_command_builds_the_cache_and_logs_counts(dataset, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf, open_dict

    from agelab.prepare import prepare

    (tmp_path / "toy_reader.py").write_text(
        "import pandas as pd\nfrom collections import Counter\nfrom types import SimpleNamespace\n"
        "def read(root):\n"
        "    return SimpleNamespace(records=pd.read_csv(root + '/records.csv'), dropped=Counter(bad_age=2))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dataset.to_csv(tmp_path / "records.csv", index=False)
    cfg = compose_config(tmp_path, ["+faces@data.source.cropper=default", f"+data.root={tmp_path}"],
                         config_name="prepare")
    assert cfg.task_name == "prepare" and cfg.log_to_mlflow is True
    assert cfg.data.source.cropper.output_size == 73  # crop_margin(64): the stored size follows the model
    with open_dict(cfg):
        cfg.data.source = OmegaConf.create({
            "_target_": "agelab.data.prepared.PreparedSource", "name": "toy", "cache_dir": str(tmp_path / "cache"),
            "reader": {"_target_": "toy_reader.read", "_partial_": True, "root": "${data.root}"},
            "cropper": {"_target_": "agelab.data.faces.FaceCropper", "output_size": 48, "min_sharpness": 60.0,
                        "min_face_size": 40},
            "split": {"_target_": "test_prepare.half_split", "_partial_": True},
            "workers": 1, "progress": False})
    log_file = logging.FileHandler(tmp_path / "prepare.log")  # as Hydra's job logging adds one
    logging.getLogger().addHandler(log_file)
    try:
        counts = prepare(cfg)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    assert counts == {"kept": 14, **{f"dropped/{k}": v for k, v in {**EXPECTED_DROPS, "bad_age": 2}.items()}}
    written = (tmp_path / "prepare.log").read_text()  # the console's table, as lines, in the run's log file
    assert "toy: kept 14 of 23\n  dropped no_face          3\n" in written and "  dropped bad_age          2" in written

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab-prepare").experiment_id])
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert metrics["prepare/kept"] == 14 and metrics["prepare/dropped/too_blurry"] == 1
    assert metrics["prepare/dropped/bad_age"] == 2 and metrics["prepare/dropped/unreadable"] == 3
    assert runs[0].data.params["faces.output_size"] == "48" and runs[0].data.tags["data"] == "toy"


def test_faces_configs_compose(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(tmp_path, ["data=utkface", "data.root=x"])
    cropper = instantiate(cfg.data.source.cropper)
    assert isinstance(cropper, FaceCropper)  # chips are framed as photos are: conf/faces/default.yaml
    assert cropper == FaceCropper(output_size=73)  # crop_margin(64)


def utkface_with_two_bad_files(root: Path) -> tuple[Path, Path]:
    """8 good chips, a corrupt JPEG with a good name and a good image with a bad name."""
    root.mkdir(parents=True)
    for i in range(8):
        name = f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i:03d}.jpg.chip.jpg"
        Image.fromarray(draw_face(64, 44, seed=i)).save(root / name)
    corrupt = root / "30_1_2_20170116174525990.jpg.chip.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 cut off")  # a JPEG header, then nothing
    badly_named = root / "25_0_20170116174525999.jpg.chip.jpg"  # the race is missing
    Image.fromarray(draw_face(64, 44)).save(badly_named)
    return corrupt, badly_named


def test_dropped_csv_names_each_dropped_file_and_is_logged(tmp_path):
    from mlflow.tracking import MlflowClient

    from agelab.prepare import prepare

    corrupt, badly_named = utkface_with_two_bad_files(tmp_path / "UTKFace")
    cfg = compose_config(tmp_path, ["data=utkface", f"data.root={tmp_path / 'UTKFace'}", "data.source.workers=1",
                                    "data.source.cropper.min_face_size=32",
                                    "+data.source.progress=false"], config_name="prepare")
    counts = prepare(cfg)
    assert counts == {"kept": 8, "dropped/bad_filename": 1, "dropped/unreadable": 1}
    expected = pd.DataFrame({"path": [str(badly_named), str(corrupt)], "reason": ["bad_filename", "unreadable"]})
    (folder,) = (tmp_path / "data" / "cache").glob("utkface-*")
    pd.testing.assert_frame_equal(pd.read_csv(folder / "dropped.csv"), expected)  # beside dropped.json

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agelab-prepare").experiment_id])
    logged = client.download_artifacts(run.info.run_id, "prepare/dropped.csv", str(tmp_path / "artifacts"))
    pd.testing.assert_frame_equal(pd.read_csv(logged), expected)


def test_a_missing_test_root_stops_before_the_train_dataset_is_read(tmp_path):
    from agelab.prepare import prepare

    imdb = tmp_path / "imdb"
    imdb.mkdir()  # no imdb.mat: reading it first would fail on that instead
    cfg = compose_config(tmp_path, ["data=imdb_morph2", f"data.root={imdb}", "data.source.test_root=/nope"],
                         config_name="prepare")
    with pytest.raises(DataError, match=r"^data\.source\.test_root /nope is not a folder$"):
        prepare(cfg)
    assert not (tmp_path / "data" / "cache").exists()  # nothing cropped


def test_a_training_run_logs_the_first_dropped_images_and_none_when_nothing_dropped(tmp_path):
    from agelab.data.report import log_drops

    logged = []

    class Client:
        def log_artifact(self, run_id, path, artifact_dir):
            logged.append((artifact_dir, pd.read_csv(path)))

    drops = pd.DataFrame({"path": [f"img{i}.jpg" for i in range(5)], "reason": "unreadable"})
    log_drops(Client(), "run", drops, "data", limit=3)
    log_drops(Client(), "run", drops.iloc[:0], "data")
    assert len(logged) == 1 and logged[0][0] == "data"
    assert logged[0][1]["path"].tolist() == ["img0.jpg", "img1.jpg", "img2.jpg"]


def test_prepare_builds_the_built_in_faces_too(tmp_path):
    from agelab.prepare import prepare

    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "data.source.train_size=12", "data.source.val_size=4",
                                    "data.source.test_size=4", "data.source.image_size=64", "log_to_mlflow=false"],
                         config_name="prepare")
    assert prepare(cfg) == {"kept": 20}  # (it failed: the built-in source has prepare() but no counts)
    assert len(list((tmp_path / "data" / "cache").glob("synth-*"))) == 1
