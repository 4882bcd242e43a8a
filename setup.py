"""Build hook: a wheel carries the dbt project, codelists, expectation suites and the Data
Docs assets that `sprx` reads at run time, so that `pip install .` works anywhere.

They live at the top of the checkout (dbt, the lead's models and GX expect them there), not
in the package. An editable install (`make setup`) reads them in place; a wheel gets a copy
under `sprx_pipeline/project/`, which `sprx_pipeline.config.PROJECT_ROOT` prefers when it is
there. The Data Docs assets (`vendor/data-docs/`, fetched from npm by `make setup`) are
copied when present; without them the Data Docs load their styles from CDNs.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("dbt_project", "codelists", "expectations", "vendor/data-docs")
SKIP = shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml", "__pycache__", "*.pyc")


class BuildPyWithProject(build_py):
    """build_py, then copy the run-time project files into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in BUNDLED:
            source = ROOT / name
            if source.is_dir():
                target = Path(self.build_lib, "sprx_pipeline", "project", name)
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target, ignore=SKIP)


setup(cmdclass={"build_py": BuildPyWithProject})
