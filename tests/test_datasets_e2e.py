"""Real dataset configs end to end: tiny datasets in their on-disk formats, trained one epoch via data=<name>."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from PIL import Image

from agelab.data.cache import load_cache, save_cache
from agelab.errors import ConfigError
from agelab.training import train

from conftest import TINY
from conftest import compose_config as compose_with_hydra
from test_faces import draw_face

REPO = Path(__file__).resolve().parents[1]
# TINY without its synth-only keys; one epoch, batches of 8, cropping in this process.
SMALL = [o for o in TINY if not o.startswith(("data.source.", "data.batch_size", "trainer.max_epochs"))] + [
    "trainer.max_epochs=1", "data.batch_size=8", "data.source.workers=1", "+data.source.progress=false",
    "data.source.cropper.min_face_size=32"]  # the drawn faces are small
ADIENCE_HEADER = ("user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\t"
                  "fiducial_score")
ADIENCE_AGES = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)", "35",
                "(38, 42)"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches: one intra-op thread is several times faster than many on a busy, small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_config(tmp_path: Path, overrides: list[str]):
    """The composed config as ``python -m agelab.train`` hands it to train(): without the ``hydra`` node."""
    cfg = compose_with_hydra(tmp_path, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def save(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        Image.fromarray(content).save(path, quality=95)


FLAT = np.full((64, 64, 3), 120, np.uint8)  # no detail at all: no_face


def write_adience(root: Path) -> dict[int, set[str]]:
    """Five fold files, 6 good faces each (2 Flickr accounts per fold), and one of every kind of bad row
    in fold 2. Returns the kept image paths per fold."""
    kept: dict[int, set[str]] = {}
    for fold in range(5):
        lines, kept[fold] = [ADIENCE_HEADER], set()

        def row(user, face, age, content=None):
            name = f"{face}.jpg"
            if content is not None:
                save(root / "aligned" / user / f"landmark_aligned_face.{face}.{name}", content)
            return f"{user}\t{name}\t{face}\t{age}\tf\t0\t0\t10\t10\t0\t0\t50"

        for i in range(6):
            user, face = f"user{fold}{i % 2}", 10 * fold + i
            lines.append(row(user, face, ADIENCE_AGES[(fold + i) % len(ADIENCE_AGES)],
                             content=draw_face(64, 40, seed=face)))
            kept[fold].add(str(root / "aligned" / user / f"landmark_aligned_face.{face}.{face}.jpg"))
        if fold == 2:
            lines += [
                row("user20", 90, "None", content=draw_face(64, 40)),  # age_none
                "user20\t91.jpg\t91",  # bad_row: too few fields
                row("user20", 92, "(25, 32)"),  # missing_file: no image
                row("user21", 93, "(25, 32)", content=draw_face(20, 12)),  # no_face (a 12 px face, below min_face_size)
                row("user21", 94, "(25, 32)", content=FLAT),  # no_face
                row("user21", 95, "(25, 32)", content=b"not a jpeg"),  # unreadable
            ]
        (root / f"fold_{fold}_data.txt").write_text("\n".join(lines) + "\n")
    return kept


def run_metrics(root: Path) -> dict[str, float]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return runs[0].data.metrics


def data_counts(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("data/")}


def test_adience_trains_on_four_folds_and_tests_on_the_chosen_one(tmp_path, capsys):
    root = tmp_path / "adience"
    kept = write_adience(root)
    overrides = [*SMALL, "data=adience", f"data.root={root}"]  # the dataset brings head=ce, monitored by val/acc
    cfg = compose_config(tmp_path, [*overrides, "data.fold=2"])
    assert cfg.head._target_.endswith("GroupCEHead") and cfg.callbacks.model_checkpoint.monitor == "val/acc"
    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= metrics["test/one_off"] <= 1
    printed = capsys.readouterr().out
    assert "kept 30 of 36" in printed and "dropped unreadable" in printed and "test 6" in printed
    counts = data_counts(run_metrics(tmp_path))
    assert counts.pop("data/split/test") == 6  # fold 2's good faces only
    assert counts.pop("data/split/train") + counts.pop("data/split/val") == 24
    assert counts == {"data/kept": 30, "data/dropped/age_none": 1, "data/dropped/bad_row": 1,
                      "data/dropped/missing_file": 1, "data/dropped/no_face": 2,
                      "data/dropped/unreadable": 1}

    for fold in (0, 2, 4):  # the same cache, another test fold
        datamodule = instantiate(compose_config(tmp_path, [*overrides, f"data.fold={fold}"]).data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        images, records = datamodule.source.load()
        assert set(records.loc[records["split"] == "test", "path"]) == kept[fold]
        assert len(datamodule.datasets["test"]) == len(kept[fold])
        assert set(records.loc[records["split"] != "test", "fold"]) == set(range(5)) - {fold}
        assert images.shape == (30, 73, 73, 3)  # aligned crops, whole, at crop_margin(64)


def test_groups_only_stop_an_age_head_before_the_first_epoch(tmp_path):
    root = tmp_path / "groups"
    for i in range(12):
        save(root / f"f{i:02d}.jpg", draw_face(seed=i))
    pd.DataFrame({"path": [f"f{i:02d}.jpg" for i in range(12)], "group": [i % 8 for i in range(12)]}).to_csv(
        root / "labels.csv", index=False)
    overrides = [*SMALL, "data=csv", f"data.root={root}",
                 "data/split@data.source.split=random"]
    with pytest.raises(ConfigError, match="^the head learns from ages and none of the"):
        train(compose_config(tmp_path, overrides))
    with pytest.raises(ConfigError, match="^callbacks.model_checkpoint.monitor=val/mae needs ages in the val split"):
        train(compose_config(tmp_path, [*overrides, "head=ce", "callbacks.model_checkpoint.monitor=val/mae"]))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("agelab")
    assert experiment is None or not client.search_runs([experiment.experiment_id])  # stopped before any run


def test_csv_with_detection_and_a_subject_split(tmp_path):
    root = tmp_path / "mine"
    rows = []
    for i in range(16):
        save(root / "faces" / f"f{i:02d}.jpg", draw_face(160, 60 + i, seed=i))
        rows.append({"path": f"faces/f{i:02d}.jpg", "age": 18 + 3 * i, "subject": f"p{i // 2}", "gender": "mf"[i % 2]})
    save(root / "faces" / "blank.jpg", np.full((160, 160, 3), 90, np.uint8))
    rows += [{"path": "faces/blank.jpg", "age": 30, "subject": "q", "gender": "m"},  # no_face
             {"path": "faces/f00.jpg", "age": 40, "subject": "q", "gender": "m"},  # duplicate
             {"path": "faces/gone.jpg", "age": 40, "subject": "q", "gender": "m"},  # missing_file
             {"path": "faces/f01.jpg", "age": "old", "subject": "q", "gender": "m"}]  # bad_age
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)

    metrics = train(compose_config(tmp_path, [*SMALL, "data=csv", f"data.root={root}"]))
    assert np.isfinite(metrics["test/mae"])
    counts = data_counts(run_metrics(tmp_path))
    assert {k: v for k, v in counts.items() if not k.startswith("data/split/")} == {
        "data/kept": 16, "data/dropped/no_face": 1, "data/dropped/duplicate": 1, "data/dropped/missing_file": 1,
        "data/dropped/bad_age": 1}
    assert sum(v for k, v in counts.items() if k.startswith("data/split/")) == 16

    cfg = compose_config(tmp_path, [*SMALL, "data=csv", f"data.root={root}"])
    _, records = instantiate(cfg.data.source).load()
    sides = records.groupby("subject")["split"].nunique()
    assert (sides == 1).all() and set(records["split"]) == {"train", "val", "test"}  # no person on two sides
    cfg = compose_config(tmp_path, [*SMALL, "data=csv", f"data.root={root}", "data/split@data.source.split=random"])
    assert cfg.data.source.split._target_ == "agelab.data.splits.random_split"


def test_utkface_chips_by_file_name_with_a_random_split(tmp_path):
    root = tmp_path / "UTKFace"
    ages = [1, 4, 9, 15, 21, 26, 30, 34, 38, 45, 52, 60, 67, 75, 88, 110]  # 110: trained as the last class
    for i, age in enumerate(ages):
        save(root / f"{age}_{i % 2}_{i % 5}_2017011617452{i:03d}.jpg.chip.jpg", draw_face(64, 44, seed=i))
    save(root / "25_0_20170116174525999.jpg.chip.jpg", draw_face(64, 44))  # race missing: bad_filename
    save(root / "130_1_0_20170116174525998.jpg.chip.jpg", draw_face(64, 44))  # age > 120: bad_filename
    save(root / "40_1_2_20170116174525997.jpg.chip.jpg", FLAT)  # no_face

    metrics = train(compose_config(tmp_path, [*SMALL, "data=utkface", f"data.root={root}", "head=multitask"]))
    assert np.isfinite(metrics["test/mae"])
    # Gender and race from the file names reach the batches: the gender output trains and is scored,
    # and the test MAE is broken down by both.
    assert 0 <= metrics["test/gender_acc"] <= 1
    assert {k for k in metrics if k.startswith("test/mae_gender_")} <= {"test/mae_gender_f", "test/mae_gender_m"}
    races = {k.removeprefix("test/mae_race_") for k in metrics if k.startswith("test/mae_race_")}
    assert races and races <= {"white", "black", "asian", "indian", "other"}
    counts = data_counts(run_metrics(tmp_path))
    assert counts == {"data/kept": 16, "data/dropped/bad_filename": 2, "data/dropped/no_face": 1,
                      "data/split/train": 12, "data/split/val": 1, "data/split/test": 3}  # random 20% / 10%
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("agelab").experiment_id])
    dropped = pd.read_csv(client.download_artifacts(run.info.run_id, "data/dropped.csv", str(tmp_path / "dl")))
    assert dropped.values.tolist() == [[str(root / "130_1_0_20170116174525998.jpg.chip.jpg"), "bad_filename"],
                                       [str(root / "25_0_20170116174525999.jpg.chip.jpg"), "bad_filename"],
                                       [str(root / "40_1_2_20170116174525997.jpg.chip.jpg"), "no_face"]]


def read_and_split(tmp_path: Path, overrides: list[str]):
    """The configured reader, split and balance of data=<name>, applied without cropping."""
    source = compose_config(tmp_path, overrides).data.source
    result = instantiate(source.reader)()
    records = instantiate(source.split)(result.records)
    if source.balance is not None:
        balanced, _ = instantiate(source.balance)(records[records["split"] == "train"])
        records = pd.concat([balanced, records[records["split"] != "train"]])
    return result, records


def test_morph2_random_80_20_or_subject_exclusive(tmp_path):
    root = tmp_path / "morph"
    (root / "Album2").mkdir(parents=True)
    lines = ["id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo"]
    for i in range(20):
        subject, photo = f"0{70081 + i // 2}", f"Album2/0{70081 + i // 2}_{i % 2}M{20 + i}.JPG"
        (root / photo).write_bytes(b"")
        lines.append(f"{subject},{i % 2},01/01/1970,01/01/1990,B,M,0,{20 + i},0,0,{photo}")
    (root / "morph_2008_nonCommercial.csv").write_text("\n".join(lines) + "\n")

    _, records = read_and_split(tmp_path, ["data=morph2", f"data.root={root}"])
    assert records["subject"].iloc[0] == "070081" and len(records) == 20
    assert records["split"].value_counts().to_dict() == {"train": 14, "test": 4, "val": 2}  # 20% test, 10% of the rest
    _, records = read_and_split(tmp_path, ["data=morph2", f"data.root={root}", "data/split@data.source.split=subject"])
    assert (records.groupby("subject")["split"].nunique() == 1).all()
    assert compose_config(tmp_path, ["data=morph2", f"data.root={root}"]).data.max_age == 65


def test_fgnet_leaves_the_chosen_person_out(tmp_path):
    for name in ("001A02.JPG", "001A10.JPG", "002A05.JPG", "003A30.JPG", "003A31a.JPG", "004A69.JPG"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / name).write_bytes(b"")
    for fold, subject in ((0, "001"), (2, "003")):
        _, records = read_and_split(tmp_path, ["data=fgnet", f"data.root={tmp_path}", f"data.fold={fold}"])
        assert set(records.loc[records["split"] == "test", "subject"]) == {subject}


def test_appa_keeps_its_own_split_and_target(tmp_path):
    for split, rows in {"train": ["a.jpg,30,20.5,3.0,22", "b.jpg,30,40.0,3.0,41"], "valid": ["c.jpg,30,9.5,2.0,9"],
                        "test": ["d.jpg,30,60.0,4.0,66"]}.items():
        (tmp_path / f"gt_avg_{split}.csv").write_text(
            "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age\n" + "\n".join(rows) + "\n")
        (tmp_path / split).mkdir()
        for row in rows:
            (tmp_path / split / row.split(",")[0]).write_bytes(b"")
    _, records = read_and_split(tmp_path, ["data=appa", f"data.root={tmp_path}"])
    assert records.set_index("file_name")["split"].to_dict() == {"a.jpg": "train", "b.jpg": "train", "c.jpg": "val",
                                                                  "d.jpg": "test"}
    assert records["age"].tolist() == [22, 41, 9, 66]
    _, records = read_and_split(tmp_path, ["data=appa", f"data.root={tmp_path}", "data.source.reader.target=apparent"])
    assert records["age"].tolist() == [20.5, 40.0, 9.5, 60.0]


def test_imdb_subject_split_and_per_age_balancing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "data"))
    from test_imdb_reader import write_imdb_wiki  # the released .mat layout

    (tmp_path / "imdb").mkdir()
    root = write_imdb_wiki(tmp_path / "imdb")
    result, records = read_and_split(tmp_path, ["data=imdb", f"data.root={root}"])
    assert len(records) == len(result.records) == 6 and (records.groupby("subject")["split"].nunique() == 1).all()
    _, balanced = read_and_split(tmp_path, ["data=imdb", f"data.root={root}", "data/balance@data.source.balance=per_age",
                                            "data.source.balance.low=3", "data.source.balance.high=4"])
    train = balanced[balanced["split"] == "train"]
    assert (train["age"].value_counts() == 3).all()  # every age topped up to low
    assert balanced[balanced["split"] != "train"].equals(records[records["split"] != "train"])


def test_cache_keeps_text_ids_as_text(tmp_path):
    records = pd.DataFrame({"path": ["070081_2F36.JPG"], "age": [36.0], "subject": ["070081"], "split": ["test"]})
    save_cache(tmp_path, np.zeros((1, 4, 4, 3), np.uint8), records)
    assert load_cache(tmp_path)[1]["subject"].tolist() == ["070081"]


def test_a_root_left_out_is_one_clear_line(tmp_path, capsys):
    from agelab.cli import run_or_exit

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, compose_config(tmp_path, ["data=utkface"]))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: data.root is required: pass data.root=<dataset folder>\n"


@pytest.mark.parametrize("command", ["agelab.train", "agelab.prepare"])
def test_a_missing_root_fails_with_one_line_naming_the_expected_files(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", command, f"paths.root_dir={tmp_path}", "data=adience",
                             "data.root=/no/such/adience"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: data.root /no/such/adience is not a folder (it should hold fold_0_data.txt .. fold_4_data.txt and "
        "aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>)"]
    assert not (tmp_path / "mlflow.db").exists()  # failed before a run was opened


@pytest.mark.parametrize("data", ["utkface", "fgnet"])
def test_a_folder_of_another_dataset_names_the_dataset_and_folder(tmp_path, capsys, data):
    from agelab.cli import run_or_exit
    from agelab.prepare import prepare

    root = tmp_path / "adience"
    save(root / "aligned" / "user1" / "landmark_aligned_face.1.photo.jpg", draw_face(64, 44))  # named for Adience
    cfg = compose_with_hydra(tmp_path, [*SMALL, f"data={data}", f"data.root={root}"], config_name="prepare")
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(prepare, cfg)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(f"error: {data}: ") and str(root) in error
    if data == "utkface":  # its reader counts the misnamed file as bad_filename
        assert error.endswith("(bad_filename 1); check data.root and that its files follow this dataset's layout")


@pytest.mark.parametrize("fold, span", [(7, "0..4"), (-1, "0..4")])
def test_an_adience_fold_out_of_range_stops_before_any_run(tmp_path, capsys, fold, span):
    from agelab.cli import run_or_exit

    (tmp_path / "adience").mkdir()
    cfg = compose_config(tmp_path, [*SMALL, "data=adience", f"data.root={tmp_path / 'adience'}", f"data.fold={fold}"])
    with pytest.raises(SystemExit):
        run_or_exit(train, cfg)
    assert capsys.readouterr().err == f"error: data.fold must be {span}, got {fold}\n"
    assert not (tmp_path / "mlflow.db").exists()
