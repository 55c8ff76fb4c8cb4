"""Wheels carry the Hydra configs inside the package (agelab/conf); a checkout reads them from conf/."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # an editable install reads conf/ in place
            shutil.copytree(Path(__file__).parent / "conf", Path(self.build_lib) / "agelab" / "conf",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConfigs})
