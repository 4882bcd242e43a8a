"""Record every file a Python process opens, for tests/runtime_files.py.

On PYTHONPATH with SPRX_OPEN_AUDIT_LOG set, every Python process (the `sprx` command and the
dbt and Airflow subprocesses it starts, which inherit the environment) appends the absolute
path of each file it opens to that log, one per line. Python's audit hooks see every `open`
event (built-in open, io, os.open, pathlib), so nothing read through Python is missed.
"""

import os
import sys

_LOG = os.environ.get("SPRX_OPEN_AUDIT_LOG")


def _record(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    os.write(_FD, (os.path.normpath(path) + "\n").encode("utf-8", "surrogateescape"))


if _LOG:
    _FD = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # before the hook
    sys.addaudithook(_record)
