"""Bad config values stop the command with one clear line, not a traceback through Lightning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_train(tmp_path, *overrides):
    return subprocess.run([sys.executable, "-m", "agelab.train", f"paths.root_dir={tmp_path}", *overrides],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, message", [
    ("data.batch_size=-1", "error: data.batch_size must be a positive integer, got -1"),
    ("data.source.train_size=0", "error: data.source.train_size must be a positive integer, got 0"),
    ("model.input_size=100", "error: model.input_size must be a positive multiple of 16, got 100"),
    ("ckpt_path=/no/such/last.ckpt", "error: ckpt_path: no checkpoint at /no/such/last.ckpt"),
    ("trainer.max_epochs=0", "error: trainer.max_epochs must be a positive integer (or -1 / null with trainer.max_steps > 0), got 0"),
    ("callbacks=figures", "error: training needs callbacks.model_checkpoint (callbacks=default or callbacks=export; "
                          "callbacks=figures is the set agelab.eval uses)"),
    ("+data.source.foo=1", "error: data.source: SynthSource takes no foo (it takes train_size, val_size, "
                             "test_size, image_size, seed, label_noise, cache_dir)"),
    ("+callbacks.model_checkpoint.save_top_kk=2",
     "error: callbacks.model_checkpoint: ModelCheckpoint takes no save_top_kk (did you mean save_top_k?)"),
])
def test_bad_values_fail_fast_with_one_line(tmp_path, override, message):
    result = run_train(tmp_path, override)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [message]
    assert not (tmp_path / "data").exists()  # failed before generating or training anything
    assert not list(tmp_path.rglob("checkpoints"))  # nor making the run's checkpoint folder


def test_unknown_model_name_lists_the_known_ones(tmp_path):
    result = run_train(tmp_path, "-m", "model=smlf_small,nope")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("error: Could not find 'model/nope' (available in 'model': ")
    assert "smlf_small" in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # before Hydra started anything


def test_group_choices_are_checked_as_hydra_reads_them():
    from agelab.config_checks import unknown_group_choice

    assert unknown_group_choice(["model=smlf", "head=dex", "optimizer.lr=0.1", "-m", "--cfg", "job"]) is None
    assert unknown_group_choice(["data/split@data.source.split=subject", "+faces@data.source.cropper=default"]) is None
    assert unknown_group_choice(["model=null", "model=choice(smlf,nope)", "hydra/launcher=joblib", "model='smlf'"]) is None
    assert unknown_group_choice(["data=utkface", "data/split@data.source.split=nope"]).startswith(
        "Could not find 'data/split/nope' (available in 'data/split': all, fold, lopo, ")
    assert unknown_group_choice(["-m", "head=dex,no_head"]).startswith("Could not find 'head/no_head'")


@pytest.mark.parametrize("command, arguments, message", [
    ("train", ["-m", "model=smlf,smlf_small", "optimizer.lrr=0.1,0.2"],
     "error: optimizer.lrr is not a key of the train config (did you mean optimizer.lr?; "
     "to add a new key: +optimizer.lrr=0.1,0.2)"),
    ("predict", ["photo.jpg", "onnx=m.onnx", "faces.min_face_sise=2"],
     "error: faces.min_face_sise is not a key of the predict config (did you mean faces.min_face_size?; "
     "to add a new key: +faces.min_face_sise=2)"),
    ("report", ["precison=2"], "error: precison is not a key of the report config (did you mean precision?; "
                               "to add a new key: +precison=2)"),
])
def test_an_composition_mistake_is_one_line_naming_the_nearest(tmp_path, command, arguments, message):
    result = subprocess.run([sys.executable, "-m", f"agelab.{command}", *arguments], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (2, message)
    assert not any(tmp_path.iterdir())  # before Hydra made a run folder


def test_a_photo_named_like_an_override_is_a_path_not_a_key(tmp_path):
    (tmp_path / "age=30.jpg").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "agelab.predict", "age=30.jpg", "onnx=/no/model.onnx"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (2, "error: onnx: no model at /no/model.onnx")


def test_overrides_that_fit_pass_the_key_check():
    from agelab.config_checks import composition_mistake

    for config, argv in [("train", ["-m", "hparams_search=optuna", "data.source.train_size=range(100,300,100)",
                                    "optimizer.lr=tag(log,interval(0.0001,0.1))"]),
                         ("train", ["experiment=levi_synth", "+trainer.gradient_clip_val=1.0", "~callbacks.cs_curve_figure"]),
                         ("train", ["data=morph2", "data.root=/x", "data/split@data.source.split=subject"]),
                         ("predict", ["input=[a.jpg,b.jpg]", "onnx=m.onnx", "video.every=2"]),
                         ("train", ["--cfg", "job", "nothing.here=1"])]:  # Hydra's flags: left to Hydra
        assert composition_mistake(config, argv) is None, argv
    assert composition_mistake("train", ["~nothing"]).startswith("Could not delete from config")
    launcher = composition_mistake("train", ["hydra/launcher=nope"])  # Hydra's own groups, in one line
    assert launcher.startswith("In 'hydra/config': Could not find 'hydra/launcher/nope' Available options in "
                               "'hydra/launcher': ") and " local slurm " in launcher and "\n" not in launcher


@pytest.mark.parametrize("command", ["train", "prepare", "eval", "predict", "export", "cv", "report"])
def test_help_opens_with_the_usage_line(command):
    result = subprocess.run([sys.executable, "-m", f"agelab.{command}", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1000:]
    assert result.stdout.splitlines()[0].startswith(f"python -m agelab.{command} ")
    takes_groups = command in ("train", "prepare", "eval", "cv")  # the others list their options only
    assert ("== Configuration groups ==" in result.stdout) == takes_groups
    assert ("== Options ==" in result.stdout) == (not takes_groups)


def test_whole_number_settings_refuse_booleans_floats_and_small_values():
    from agelab.errors import ConfigError, require_int

    for value, minimum in ((5, 1), (0, 0), (2, 2)):
        require_int("x", value, minimum)
    require_int("x", None, 1, allow_none=True)
    for value, minimum, message in ((True, 1, "x must be a positive integer, got True"),
                                    (2.0, 1, "x must be a positive integer, got 2.0"),
                                    (-1, 0, "x must be an integer >= 0, got -1"),
                                    (None, 2, "x must be an integer >= 2, got None")):
        with pytest.raises(ConfigError) as caught:
            require_int("x", value, minimum)
        assert str(caught.value) == message
    with pytest.raises(ConfigError, match=r"^x must be null or an integer >= 2, got 1$"):
        require_int("x", 1, 2, allow_none=True)


def test_an_argument_check_inside_a_target_names_its_config_path():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from agelab.cli import with_config_path
    from agelab.errors import ConfigError

    def error_of(cropper: dict) -> str:
        cfg = OmegaConf.create({"data": {"source": {"_target_": "builtins.dict", "cropper": {
            "_target_": "agelab.data.faces.FaceCropper", **cropper}}}})
        with pytest.raises(Exception) as raised:
            instantiate(cfg.data)
        return str(with_config_path(raised.value.__cause__, raised.value))

    assert error_of({"min_face_size": "abc"}) == "data.source.cropper.min_face_size must be an integer >= 8, got 'abc'"
    assert error_of({"detect_side": 3}) == ("data.source.cropper.detect_side must be 0 or null (full size) "
                                            "or an integer >= 64, got 3")
    # a message that is not about one of the target's arguments, or already has its path, stays as it is
    outside = ConfigError("the model's faces were cut by an earlier face pipeline")
    assert with_config_path(outside, RuntimeError()) is outside
    assert str(with_config_path(ConfigError("data.root /x is not a folder"), RuntimeError())) == "data.root /x is not a folder"


def test_a_training_stopped_by_sigterm_exits_143_naming_its_last_checkpoint(tmp_path, capsys):
    from omegaconf import OmegaConf
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from agelab.cli import run_or_exit

    def stopped(cfg):
        raise SIGTERMException  # what Lightning raises on SIGTERM: a SystemExit whose exit code would be 0

    (tmp_path / "last.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"callbacks": {"model_checkpoint": {"dirpath": str(tmp_path)}}})
    with pytest.raises(SystemExit) as exited:
        run_or_exit(stopped, cfg, arguments_of=None)
    assert exited.value.code == 143
    assert capsys.readouterr().err == (f"error: stopped by SIGTERM; resume with the same overrides and "
                                       f"ckpt_path={tmp_path / 'last.ckpt'}\n")
    with pytest.raises(SystemExit, match="^3$"):  # any other exit passes through
        run_or_exit(lambda cfg: sys.exit(3), cfg, arguments_of=None)
