"""Virtual environments built from PyPI by the tests themselves: an analyst's older DuckDB
(cached, tests/test_analyst_readers.py) and the light install (fresh, tests/test_install.py).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sprx_pipeline.config import PROJECT_ROOT

CACHE = PROJECT_ROOT / ".cache"  # git-ignored


def create(folder: Path, python: str = sys.executable) -> Path:
    """A new venv at `folder` from `python`; returns its interpreter."""
    subprocess.run([python, "-m", "venv", str(folder)], check=True, capture_output=True)
    return folder / "bin" / "python"


def pip_install(python: Path, *args: str, timeout: float = 1800) -> None:
    """`pip install` into the venv of `python`; on failure, say what pip said."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise AssertionError(
            f"pip install {' '.join(args)} failed in {python.parent.parent}:\n"
            + "\n".join(
                line for line in done.stderr.splitlines() if "is ignored: it is neither" not in line
            )[-4000:]
        )


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two pytest runs of one checkout build it once
        yield


def cached(name: str, requirements: list[str], python: str = sys.executable) -> Path:
    """The interpreter of the venv `.cache/<name>`, with `requirements` installed from PyPI
    as wheels the first time (later runs reuse it; delete the folder to rebuild it)."""
    folder = CACHE / name
    done = folder / ".complete"
    with _locked(CACHE / f".{name}.lock"):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            interpreter = create(folder, python)
            pip_install(interpreter, "--only-binary=:all:", *requirements)
            done.write_text("\n".join(requirements) + "\n")
    return folder / "bin" / "python"
