"""A wheel (what a deployment box installs, e.g. with --no-deps next to onnxruntime) carries the configs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_every_config_inside_the_package(tmp_path):
    source = tmp_path / "src"
    for name in ("agelab", "conf"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("agelab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"agelab/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert configs and configs <= names
    assert "agelab/predict.py" in names and not any(n.startswith("conf/") for n in names)
    assert "agelab/inference/demo.html" in names  # the demo's page
