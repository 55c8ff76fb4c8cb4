"""Configs can't name arbitrary code; checkpoints with pickled code are refused."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from agelab.checkpoint import load_module, read_checkpoint
from agelab.config_checks import check_targets
from agelab.errors import ConfigError
from agelab.tracking import CONFIG_KEY

REPO = Path(__file__).resolve().parents[1]


# Callables that run code or load pickles, each under a prefix a package allow-list would have let through.
GADGETS = {
    "torch.fx.graph_module._forward_from_src": {"_convert_": "all", "globals": {},
                                                "src": "import os\nos.system('touch PAYLOAD_RAN')\ndef forward(): pass\n"},
    "torch.load": {"f": "payload.pt", "weights_only": False},
    "torch.jit.load": {"f": "payload.pt"},
    "torch.hub.load": {"repo_or_dir": ".", "model": "payload", "source": "local"},
    "torch.utils.cpp_extension.load": {"name": "payload", "sources": ["payload.cpp"]},
    "torch.os.system": {"_args_": ["touch PAYLOAD_RAN"]},
    "agelab.cli.sys.exit": {"_args_": [3]},
    "importlib.import_module": {"_args_": ["payload"]},
    "builtins.exec": {"_args_": ["open('PAYLOAD_RAN', 'w')"]},
}


@pytest.mark.parametrize("target", sorted(GADGETS))
def test_code_gadgets_are_refused_in_a_checkpoint_and_on_the_command_line(target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gadget = {"_target_": target, **GADGETS[target]}
    ckpt = tmp_path / "shared.ckpt"
    torch.save({"state_dict": {}, CONFIG_KEY: OmegaConf.to_yaml({"model": gadget, "head": {}})}, ckpt)
    with pytest.raises(ConfigError, match=rf"^model._target_='{target}' is not allowed"):
        load_module(ckpt)
    with pytest.raises(ConfigError, match=rf"^data.source._target_='{target}' is not allowed"):
        check_targets(OmegaConf.create({"data": {"source": gadget}}))
    assert not (tmp_path / "PAYLOAD_RAN").exists()


def test_a_shared_checkpoint_that_compiles_code_is_refused_by_predict(tmp_path):
    """The reported exploit, end to end: predict, eval and export on a checkpoint whose stored model
    is torch.fx's code compiler stop with one line, exit 2, and the payload never runs."""
    marker = tmp_path / "pwned.txt"
    gadget = {"_target_": "torch.fx.graph_module._forward_from_src", "_convert_": "all", "globals": {},
              "src": f"import os\nos.system('id > {marker}')\ndef forward(): pass\n"}
    ckpt = tmp_path / "that.ckpt"
    torch.save({"state_dict": {}, CONFIG_KEY: OmegaConf.to_yaml({"model": gadget, "head": {}})}, ckpt)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not read")
    for command in (["agelab.predict", str(photo)], ["agelab.eval"], ["agelab.export"]):
        result = subprocess.run([sys.executable, "-m", *command, f"ckpt={ckpt}", f"paths.root_dir={tmp_path}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=180)
        assert result.returncode == 2, (command, result.stderr[-2000:])
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and "torch.fx.graph_module._forward_from_src' is not allowed" in lines[-1]
        assert "Traceback" not in result.stderr and not marker.exists()


def test_targets_outside_the_allow_list_are_refused():
    check_targets(OmegaConf.create({"model": {"_target_": "agelab.models.smlf.SMLFNet"},
                                    "opt": {"_target_": "torch.optim.SGD"}}))
    evil = OmegaConf.create({"data": {"transforms": [{"_target_": "os.system", "command": "touch /tmp/owned"}]}})
    with pytest.raises(ConfigError, match=r"data.transforms\[0\]._target_='os.system' is not allowed"):
        check_targets(evil)
    with pytest.raises(ConfigError, match="builtins.eval"):
        check_targets(OmegaConf.create({"x": {"_target_": "builtins.eval"}}))


def test_cli_refuses_a_yaml_that_calls_os_system(tmp_path):
    marker = tmp_path / "owned"
    result = subprocess.run([sys.executable, "-m", "agelab.train", f"paths.root_dir={tmp_path}",
                             "model._target_=os.system", f"+model.command=touch {marker}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error: model._target_='os.system' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


class Payload:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path('PAYLOAD_RAN').touch()",))


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "tampered.ckpt"
    torch.save({"state_dict": {}, "agelab_config": "{}", "extra": Payload()}, bad)
    with pytest.raises(ConfigError, match="tampered.ckpt: not a loadable agelab checkpoint") as refused:
        read_checkpoint(bad)
    assert "weights_only" not in str(refused.value)  # no advice to load it unsafely
    with pytest.raises(ConfigError):
        load_module(bad)
    assert not (tmp_path / "PAYLOAD_RAN").exists()
    # A file that isn't a checkpoint at all is refused the same way.
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(ConfigError, match="junk.ckpt"):
        read_checkpoint(junk)
