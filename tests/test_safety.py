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

REPO = Path(__file__).resolve().parents[1]


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
