"""Hostile runs: a killed command leaves no worker behind; unwritable folders and stores, a label
file naming a column twice, a run artifact path leaving the run and numbers where photos belong end
in one line (or a null answer), not a traceback or a copied file."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from agelab.config_checks import composition_mistake
from agelab.data.readers.table import read_table
from agelab.data.workers import loader_worker_init
from agelab.errors import ConfigError, DataError

from test_faces import draw_face

REPO = Path(__file__).resolve().parents[1]
QUIET = ["~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]


# ------------------------------------------------------------------------- workers die with their parent


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc/<pid>/stat."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        state, parent = text[text.rindex(")") + 2:].split()[:2]
        table[int(stat.parent.name)] = (int(parent), state)
    return table


def descendants(pid: int) -> set[int]:
    table, found, todo = process_table(), set(), [pid]
    while todo:
        parent = todo.pop()
        kids = {p for p, (pp, _) in table.items() if pp == parent} - found
        found |= kids
        todo += kids
    return found


def living(pids: set[int]) -> set[int]:
    """The ones still running (a zombie holds no memory and uses no CPU: it waits to be reaped)."""
    table = process_table()
    return {p for p in pids if p in table and table[p][1] != "Z"}


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def workers_of(pid: int) -> set[int]:
    """``pid``'s pool and loader workers: forks of it (its own command line) or spawned by multiprocessing."""
    own = command_line(pid)
    return {p for p in descendants(pid) if command_line(p) == own or b"spawn_main" in command_line(p)}


def write_photo_folder(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(draw_face(160, 60, seed=i)).save(folder / f"face{i:03d}.jpg")
    pd.DataFrame({"path": [f"face{i:03d}.jpg" for i in range(count)], "age": 30}).to_csv(folder / "labels.csv", index=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
@pytest.mark.parametrize("command, overrides", [
    # The built-in faces over 500 are drawn by a pool of 2 processes.
    ("prepare", ["data.source.train_size=4000", "data.source.val_size=10", "data.source.test_size=10",
                 "data.source.image_size=64", "log_to_mlflow=false"]),
    # A labelled folder's faces are cropped by a pool of 2 processes.
    ("prepare", ["data=csv", "data.root={photos}", "data.source.workers=2", "+data.source.shard_size=4",
                 "+data.source.progress=false", "log_to_mlflow=false"]),
    # Training with 2 persistent loader workers.
    ("train", ["data.source.train_size=160", "data.source.val_size=48", "data.source.test_size=32",
               "data.source.image_size=72", "data.batch_size=16", "data.num_workers=2",
               "data.persistent_workers=true", "trainer.max_epochs=1000", *QUIET]),
], ids=["prepare-synth", "prepare-photos", "train"])
def test_a_killed_command_leaves_no_worker_behind(tmp_path, command, overrides):
    if command == "prepare" and "data=csv" not in overrides and (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the faces are drawn and cropped without a pool")
    if "data=csv" in overrides:
        write_photo_folder(tmp_path / "photos", 48)
    arguments = [o.format(photos=tmp_path / "photos") for o in overrides]
    proc = subprocess.Popen([sys.executable, "-m", f"agelab.{command}", f"paths.root_dir={tmp_path}", *arguments],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    started = set()
    try:
        deadline = time.time() + 180
        while len(workers_of(proc.pid)) < 2:
            assert proc.poll() is None, f"{command} ended before its workers started: {proc.stderr.read()[-2000:]!r}"
            assert time.time() < deadline, f"{command} started no workers"
            time.sleep(0.05)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 3  # (a worker that only noticed on its own would take longer, or never)
        while living(started) and time.time() < deadline:
            time.sleep(0.05)
        assert not living(started), f"left behind: {sorted(living(started))} of {sorted(started)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in living(started):  # only when the test failed: what this test started
            os.kill(pid, signal.SIGKILL)
        proc.stderr.close()


def test_loader_workers_are_seeded_as_lightning_seeds_them(monkeypatch):
    from lightning_fabric.utilities.seed import pl_worker_init_function

    def draws(init) -> tuple:
        torch.manual_seed(1234)
        init(3)
        return torch.rand(2).tolist(), float(np.random.rand()), random.random()

    monkeypatch.setenv("PL_SEED_WORKERS", "1")  # as seed_everything(workers=True) sets it
    assert draws(loader_worker_init) == draws(pl_worker_init_function)
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    torch.manual_seed(1234)
    loader_worker_init(3)
    assert torch.initial_seed() == 1234  # not seeded without it, as Lightning leaves it


# ---------------------------------------------------------------------------------- one-line errors


def run_command(command: str, tmp_path: Path, *overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"agelab.{command}", f"paths.root_dir={tmp_path / 'root'}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("command, override, message", [
    ("train", "hydra.run.dir={file}/run", r"hydra\.run\.dir: cannot make {file}/run \({file} is not a folder\)"),
    ("train", "logger.tracking_uri=file:///etc",  # (root may write there: then MLflow's refusal of file stores)
     r"logger\.tracking_uri: (cannot write into /etc|MLflow cannot open file:///etc \(.*\))"),
    ("eval", "ckpt=runs:/0123456789abcdef0123456789abcdef/../../../etc/passwd",
     r"runs:/0123456789abcdef0123456789abcdef/\.\./\.\./\.\./etc/passwd: not a run artifact \(.*\)"),
], ids=["run-dir", "tracking-uri", "runs-uri"])
def test_a_command_refuses_in_one_line(tmp_path, command, override, message):
    file = tmp_path / "file.txt"
    file.write_text("a file, not a folder")
    result = run_command(command, tmp_path, override.format(file=file))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.fullmatch("error: " + message.format(file=re.escape(str(file))), line)
    assert not list(tmp_path.rglob("passwd")) and not (tmp_path / "root" / "data").exists()  # before any work


@pytest.mark.parametrize("arguments, message", [
    (["hydra.run.dir={file}/run"], "hydra.run.dir: cannot make {file}/run ({file} is not a folder)"),
    (["hydra.run.dir={file}"], "hydra.run.dir: cannot make {file} ({file} is not a folder)"),
    (["-m", "hydra.sweep.dir={file}/sweep", "model=smlf,smlf_small"],
     "hydra.sweep.dir: cannot make {file}/sweep ({file} is not a folder)"),
    (["hydra.run.dir={tmp}/new/run"], None),
    (["-m", "hydra.sweep.dir={tmp}/sweep", "hydra.run.dir={file}/run"], None),  # a sweep makes no run folder
    (["--cfg", "job", "hydra.run.dir={file}/run"], None),  # nothing is written
])
def test_a_run_folder_hydra_cannot_make_is_one_line(tmp_path, arguments, message):
    file = tmp_path / "file.txt"
    file.write_text("")
    argv = [f"paths.root_dir={tmp_path}", *(a.format(file=file, tmp=tmp_path) for a in arguments)]
    assert composition_mistake("train", argv) == (message and message.format(file=file))
    assert not (tmp_path / "new").exists()  # checked, not made (Hydra makes it)


def test_default_run_folder_under_an_unwritable_root_is_named(tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("")
    mistake = composition_mistake("predict", [f"paths.root_dir={file}/root"])
    assert mistake.startswith(f"hydra.run.dir: cannot make {file}/root/logs/") and mistake.endswith(
        f" ({file} is not a folder)")


@pytest.mark.parametrize("root, uri, message", [
    ("{tmp}/root", "file://{file}/store", "logger.tracking_uri: cannot create {file}/store (Not a directory)"),
    ("{tmp}/root", "sqlite:///{file}/db/mlflow.db", "logger.tracking_uri: cannot create {file}/db (Not a directory)"),
    ("{file}/root", None, "logger.root_dir: cannot create {file}/root (Not a directory)"),
])
def test_a_store_that_cannot_be_written_is_one_line(tmp_path, root, uri, message):
    from agelab.tracking import mlflow_logger

    file = tmp_path / "file.txt"
    file.write_text("")
    names = {"tmp": tmp_path, "file": file}
    with pytest.raises(ConfigError) as error:
        mlflow_logger("agelab", root.format(**names), tracking_uri=uri and uri.format(**names))
    assert str(error.value) == message.format(**names)


@pytest.mark.parametrize("header", ["path,age,age", "path, age ,age", "path,age,group,path"])
def test_a_label_file_naming_a_column_twice_is_refused(tmp_path, header):
    (tmp_path / "a.jpg").write_bytes(b"")
    width = len(header.split(","))
    (tmp_path / "labels.csv").write_text(f"{header}\n" + ",".join(["a.jpg", "30", "2", "a.jpg"][:width]) + "\n")
    twice = "age" if header.count("age") > 1 else "path"
    with pytest.raises(DataError) as error:
        read_table(tmp_path, "labels.csv", name="csv")
    assert str(error.value) == f"csv: {tmp_path / 'labels.csv'} has the column '{twice}' twice in its header"


def test_unnamed_columns_are_not_a_repeated_name(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("path,age,,\na.jpg,30,,\n")  # trailing commas
    assert read_table(tmp_path, "labels.csv", name="csv").records["age"].tolist() == [30.0]


@pytest.mark.parametrize("ckpt", [
    "runs:/0123456789abcdef/../../../etc/passwd",
    "runs:/0123456789abcdef/checkpoints/../../other/model.ckpt",
    "runs:/0123456789abcdef//etc/passwd",
    "runs://etc/passwd",
    "runs:/0123456789abcdef",
])
def test_a_run_artifact_path_leaving_the_run_is_refused_before_the_store_is_touched(tmp_path, ckpt):
    from agelab.evaluation import resolve_checkpoint

    with pytest.raises(ConfigError, match=r"^runs:/.*: not a run artifact \(expected runs:/<run id>/<path inside the run>\)$"):
        resolve_checkpoint(ckpt, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "download")
    assert list(tmp_path.iterdir()) == []  # no store made, nothing downloaded


# ---------------------------------------------------------------------------------------- photo model


def test_photo_model_answers_numbers_and_non_finite_ages_with_null():
    """Its input is a photo's bytes as base64 text: a number is no photo (1e308 as JSON, or its text),
    and a face whose age is not finite gets null (the JSON answer has no NaN)."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    from agelab.inference.photo_model import PhotoAgeModel
    from agelab.inference.predictor import FacePrediction

    class NonFinite:
        cropper = SimpleNamespace(max_image_side=4000)

        def faces(self, image):
            return [FacePrediction(box=(1, 2, 30, 40), score=0.9, age=float("inf"), std=float("nan"), group=3)], None

    model = PhotoAgeModel()
    model.predictor = NonFinite()
    photo = base64.b64encode(cv2.imencode(".png", np.full((48, 48, 3), 128, np.uint8))[1].tobytes()).decode()
    answer = model.predict(None, pd.DataFrame({"image": [1e308, float("nan"), "1e308", photo]}))
    assert answer["status"].tolist() == ["unreadable"] * 3 + ["ok"]
    assert answer["age"].tolist() == [None] * 4 and answer["std"].tolist() == [None] * 4
    assert answer.loc[3, ["x1", "y1", "x2", "y2", "group"]].tolist() == [1, 2, 30, 40, "15-20"]
    sent = io.StringIO()
    predictions_to_json(answer, sent)  # as the scoring server answers
    assert "NaN" not in sent.getvalue() and len(json.loads(sent.getvalue())["predictions"]) == 4
