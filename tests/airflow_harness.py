"""Run a real, throwaway Airflow 3.3 deployment for integration tests.

``AirflowDeployment`` is a context manager. It starts these, and stops all of them on exit, even
when the test fails:

* a private PostgreSQL server, run from the machine's binaries (``/usr/lib/postgresql/<ver>/bin``
  by default, or the ``pg_bin_dir`` argument, or ``$AIRFLOW_HARNESS_PG_BIN``), listening only on
  127.0.0.1 on a free port, with a database called ``airflow``;
* ``airflow db migrate``, then ``airflow pools set`` for each requested pool;
* ``airflow api-server``, ``airflow scheduler`` and ``airflow dag-processor`` (and optionally
  ``airflow triggerer``) as child processes, each in its own process group, logging to
  ``<workdir>/logs/<name>.log``.

The only way a test talks to it is the REST API v2, using ``urllib`` only.

PostgreSQL as root
------------------
``initdb`` and ``postgres`` refuse to run as root. When the harness runs as root, it runs them as
the ``postgres`` system user (created with ``useradd --system`` if it is missing) through
``subprocess.Popen(user=..., group=...)``, so it needs neither ``su`` nor ``runuser``. Pytest's
``tmp_path`` sits under ``/tmp/pytest-of-root`` (mode 0700), which that user cannot enter. So the
data directory and the unix-socket directory go in a separate short ``mkdtemp`` directory owned by
that user. A short path also keeps the socket path under the 107-byte limit. That directory is
deleted on exit. The server's output is written through a file descriptor that we open, so
``<workdir>/logs/postgres.log`` can still live in the root-only workdir. The server runs with
``fsync=off`` and has no durability, which is fine for a throwaway test. It stops with
``pg_ctl stop -m fast``; if that fails, it gets SIGQUIT and then SIGKILL.

Airflow settings (environment variables only, see ``_airflow_env``)
---------------------------------------------------------------
Every inherited ``AIRFLOW*`` variable is dropped first, so the developer's own deployment cannot
leak in. Then:

* ``AIRFLOW_HOME`` / ``AIRFLOW_CONFIG``: the temp folder. ``airflow db migrate`` writes a default
  ``airflow.cfg`` there. Environment variables override it.
* ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow@127.0.0.1:<port>/airflow``
  (trust auth, loopback only). In Airflow 3 this key lives under ``[database]``, not ``[core]``.
* ``AIRFLOW__CORE__EXECUTOR=LocalExecutor``, ``AIRFLOW__CORE__DAGS_FOLDER``, and
  ``AIRFLOW__CORE__LOAD_EXAMPLES=False``.
* ``AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False``. The default is True, so new DAGs are
  paused and Asset-triggered runs never appear.
* ``AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5`` (how often the bundle is scanned for new files;
  the default is 300 s) and ``AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=5`` (how often a
  known file is re-parsed; the default is 30 s).
* ``AIRFLOW__API__HOST/PORT/BASE_URL`` and ``AIRFLOW__API__WORKERS=1``.
* ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:<port>/execution/``. In Airflow 3,
  task processes never touch the database. They call the api-server's Execution API, and the
  executor hands them this URL. If it is unset, it is derived from ``[api] base_url``, and failing
  that it is ``http://localhost:8080/execution/``. So ``api-server --port`` alone is a trap: the
  server listens on the new port while tasks keep calling 8080. (``[workers]
  execution_api_server_url`` is only a deprecated alias of this key.)
* ``AIRFLOW__API_AUTH__JWT_SECRET``, ``AIRFLOW__API__SECRET_KEY`` and ``AIRFLOW__CORE__FERNET_KEY``
  are fixed random values per deployment. Every component must sign and verify the task JWTs and
  the UI/REST tokens with the same secret. Without them, the values come from whichever process
  first writes ``airflow.cfg``. Airflow 3 has no separate "internal api secret".
* ``AIRFLOW__CORE__AUTH_MANAGER=...SimpleAuthManager`` plus
  ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True``. Everyone is an admin. A middleware adds
  an admin bearer token to every request, and ``GET /auth/token`` hands out a token with no
  credentials (it returns 201 ``{"access_token": ...}``). The harness still fetches that token and
  sends it, so the same client also works against a deployment that checks auth.
* ``AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT`` / ``TRIGGER_LOG_SERVER_PORT`` are free ports. With
  LocalExecutor the scheduler also starts a log server on 8793 (the triggerer uses 8794), which
  would collide with other deployments on the same host.
* ``AIRFLOW__LOGGING__COLORED_CONSOLE_LOG=False`` (plain log files), ``PYTHONUNBUFFERED=1``,
  ``NO_PROXY`` for loopback, and ``SCARF_ANALYTICS=false`` / ``DO_NOT_TRACK=true``.
* ``AIRFLOW_HARNESS_ID``: a marker in every child's environment. Task processes call
  ``setpgid`` and leave the scheduler's process group, so on exit the harness also looks for
  every process that carries its marker and kills it.

``extra_env`` is applied last and can override any of these.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

FINAL_RUN_STATES = frozenset({"success", "failed"})


class HarnessError(RuntimeError):
    """A deployment step failed or timed out (the message includes the relevant log tails)."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (callers retry on a bind race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _find_pg_bin(explicit: str | os.PathLike | None) -> Path:
    candidates: list[str] = []
    if explicit:
        candidates.append(str(explicit))
    if os.environ.get("AIRFLOW_HARNESS_PG_BIN"):
        candidates.append(os.environ["AIRFLOW_HARNESS_PG_BIN"])

    def version(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(Exception):
            candidates.append(
                subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
            )
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for c in candidates:
        if c and all(
            (Path(c) / b).is_file() for b in ("initdb", "postgres", "pg_ctl", "pg_isready")
        ):
            return Path(c)
    raise HarnessError(
        "PostgreSQL server binaries (initdb, postgres, pg_ctl) not found; looked in "
        f"{candidates}. Install them (Debian: apt-get install postgresql-15) or set AIRFLOW_HARNESS_PG_BIN."
    )


def _world_traversable(path: Path) -> bool:
    p = path.resolve()
    for part in [p, *p.parents]:
        try:
            if not os.stat(part).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


class _Component:
    def __init__(self, name: str, popen: subprocess.Popen, log: Path, logf):
        self.name, self.popen, self.log, self.logf = name, popen, log, logf


class AirflowDeployment:
    """A real local Airflow 3 deployment (PostgreSQL + api-server + scheduler + dag-processor).

    Usage::

        with AirflowDeployment(dags_folder, tmp_path, pools={"single": 1}) as af:
            af.wait_for_dag("producer")
            run_id = af.trigger("producer")
            assert af.wait_for_run("producer", run_id) == "success"
    """

    def __init__(
        self,
        dags_folder: Path,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        pools: dict[str, int] | None = None,
        *,
        start_triggerer: bool = False,
        startup_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        pg_bin_dir: str | os.PathLike | None = None,
        pg_user: str = "postgres",
        python: str | None = None,
    ) -> None:
        self.dags_folder = Path(dags_folder).resolve()
        self.workdir = Path(workdir).resolve()
        self.extra_env = dict(extra_env or {})
        self.pools = dict(pools or {})
        self.start_triggerer = start_triggerer
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._pg_bin_arg = pg_bin_dir
        self._pg_user_name = pg_user
        # The interpreter whose ``-m airflow`` runs the components (the venv that has Airflow).
        self.python = python or os.environ.get("AIRFLOW_HARNESS_PYTHON") or sys.executable

        self.home = self.workdir / "airflow_home"
        self.logs = self.workdir / "logs"
        self.marker = f"afh-{secrets.token_hex(6)}"
        self.env: dict[str, str] = {}
        self.api_port: int | None = None
        self.api_url: str | None = None
        self.pg_port: int | None = None
        self.sql_alchemy_conn: str | None = None

        self._components: list[_Component] = []
        self._pg: _Component | None = None
        self._pg_root: Path | None = None
        self._pg_bin: Path | None = None
        self._pg_ids: tuple[int, int] | None = None  # (uid, gid) to run postgres as, when root
        self._token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._stopped = True
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self._stopped = False
        if not self.dags_folder.is_dir():
            raise HarnessError(f"dags folder {self.dags_folder} does not exist")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)

        self._start_postgres()
        self.timings["postgres"] = time.monotonic() - t0

        self.api_port = free_port()
        self.env = self._airflow_env()
        self._run_cli(["db", "migrate"], "db-migrate", timeout=max(self.startup_timeout, 300))
        self.timings["db_migrate"] = time.monotonic() - t0
        for name, slots in self.pools.items():
            self._run_cli(
                ["pools", "set", name, str(int(slots)), f"harness pool {name}"],
                f"pool-{name}",
                timeout=120,
            )

        self._start_api_server()
        self.timings["api_server"] = time.monotonic() - t0
        self._spawn("scheduler", self._airflow_cmd("scheduler"))
        self._spawn("dag-processor", self._airflow_cmd("dag-processor"))
        if self.start_triggerer:
            self._spawn("triggerer", self._airflow_cmd("triggerer"))
        self._wait_healthy()
        self.timings["ready"] = time.monotonic() - t0

    def stop(self) -> None:
        """Stop everything this deployment started. Idempotent, and it never raises."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        errors: list[str] = []
        # 1. Airflow components: SIGTERM every process group, then SIGKILL once the grace period ends.
        try:
            self._terminate(self._components, self.stop_timeout)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"stopping airflow: {exc!r}")
        # 2. Anything carrying our marker that escaped the groups (task processes call setpgid).
        try:
            self._sweep_marker(self.marker)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"sweeping airflow processes: {exc!r}")
        # 3. PostgreSQL: pg_ctl stop -m fast, then signals.
        try:
            self._stop_postgres()
        except Exception as exc:  # noqa: BLE001
            errors.append(f"stopping postgres: {exc!r}")
        try:
            self._sweep_marker(self.marker + "-pg")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"sweeping postgres processes: {exc!r}")
        for c in [*self._components, *([self._pg] if self._pg else [])]:
            with contextlib.suppress(Exception):
                c.logf.close()
        self._components.clear()
        self._pg = None
        if self._pg_root is not None:
            shutil.rmtree(self._pg_root, ignore_errors=True)
            self._pg_root = None
        self.timings["stop"] = time.monotonic() - t0
        if errors:
            print("airflow_harness: cleanup problems: " + "; ".join(errors), file=sys.stderr)

    # ------------------------------------------------------------------ PostgreSQL

    def _pg_popen_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"cwd": str(self._pg_root)}
        if self._pg_ids is not None:
            uid, gid = self._pg_ids
            kw.update(user=uid, group=gid, extra_groups=[])
        return kw

    def _pg_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW"))}
        env.update(LC_ALL="C", LANG="C", AIRFLOW_HARNESS_ID=self.marker + "-pg")
        if self._pg_ids is not None:
            env["HOME"] = str(self._pg_root)
        return env

    def _resolve_pg_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam(self._pg_user_name)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            subprocess.run(
                [
                    useradd,
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    self._pg_user_name,
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            pw = pwd.getpwnam(self._pg_user_name)
        self._pg_ids = (pw.pw_uid, pw.pw_gid)

    def _start_postgres(self) -> None:
        self._pg_bin = _find_pg_bin(self._pg_bin_arg)
        self._resolve_pg_user()
        base = Path(tempfile.gettempdir())
        if not _world_traversable(base):
            base = Path("/tmp")
        self._pg_root = Path(tempfile.mkdtemp(prefix="afh-pg-", dir=base))
        if self._pg_ids is not None:
            os.chown(self._pg_root, *self._pg_ids)
        data = self._pg_root / "data"
        sock = self._pg_root / "s"
        log_path = self.logs / "postgres.log"
        logf = open(log_path, "ab")  # noqa: SIM115 - closed in stop()

        initdb = subprocess.run(
            [
                str(self._pg_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "airflow",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=self._pg_env(),
            timeout=120,
            **self._pg_popen_kwargs(),
        )
        if initdb.returncode != 0:
            logf.close()
            raise HarnessError(f"initdb failed (rc={initdb.returncode}):\n{tail(log_path)}")
        sock.mkdir(mode=0o700)
        if self._pg_ids is not None:
            os.chown(sock, *self._pg_ids)

        last_error = ""
        for _attempt in range(3):
            port = free_port()
            popen = subprocess.Popen(
                [
                    str(self._pg_bin / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={sock}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self._pg_env(),
                start_new_session=True,
                **self._pg_popen_kwargs(),
            )
            self._pg = _Component("postgres", popen, log_path, logf)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and popen.poll() is None:
                ready = subprocess.run(
                    [
                        str(self._pg_bin / "pg_isready"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-U",
                        "airflow",
                        "-d",
                        "postgres",
                        "-t",
                        "2",
                    ],
                    capture_output=True,
                    timeout=10,
                )
                if ready.returncode == 0:
                    self.pg_port = port
                    break
                time.sleep(0.2)
            if self.pg_port is not None:
                break
            last_error = tail(log_path)
            if popen.poll() is None:  # alive but never ready: stop() cleans it up
                raise HarnessError(f"PostgreSQL did not become ready within 60 s:\n{last_error}")
            if "already in use" not in last_error and "could not bind" not in last_error:
                break  # not a port race: do not retry
        if self.pg_port is None:
            raise HarnessError(f"PostgreSQL failed to start:\n{last_error}")

        created = subprocess.run(
            [
                str(self._pg_bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "airflow",
                "airflow",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=self._pg_env(),
        )
        if created.returncode != 0:
            raise HarnessError(f"createdb airflow failed: {created.stderr}\n{tail(log_path)}")
        self.sql_alchemy_conn = f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"

    def _stop_postgres(self) -> None:
        pg = self._pg
        if pg is None or pg.popen.poll() is not None:
            return
        data = self._pg_root / "data" if self._pg_root else None
        try:
            subprocess.run(
                [
                    str(self._pg_bin / "pg_ctl"),
                    "stop",
                    "-D",
                    str(data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    str(int(self.stop_timeout)),
                ],
                stdout=pg.logf,
                stderr=subprocess.STDOUT,
                env=self._pg_env(),
                timeout=self.stop_timeout + 10,
                **self._pg_popen_kwargs(),
            )
        except Exception:  # noqa: BLE001 - fall back to signals below
            pass
        try:
            pg.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal_group(pg.popen.pid, signal.SIGQUIT)  # immediate shutdown
            try:
                pg.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _signal_group(pg.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pg.popen.wait(timeout=5)

    # ------------------------------------------------------------------ Airflow processes

    def _airflow_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        api = f"http://127.0.0.1:{self.api_port}"
        no_proxy = ",".join(filter(None, ["127.0.0.1", "localhost", env.get("NO_PROXY", "")]))
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
                "AIRFLOW_HARNESS_ID": self.marker,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn or "",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": api,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "PYTHONUNBUFFERED": "1",
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
                "SCARF_ANALYTICS": "false",
                "DO_NOT_TRACK": "true",
            }
        )
        env.update(self.extra_env)
        return env

    def _airflow_cmd(self, *args: str) -> list[str]:
        return [self.python, "-m", "airflow", *args]

    def run_cli(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` against this deployment. Raises HarnessError on failure."""
        return self._run_cli(
            args, "cli-" + "-".join(a for a in args[:2] if a.isidentifier()), timeout
        )

    def _run_cli(
        self, args: list[str], logname: str, timeout: float
    ) -> subprocess.CompletedProcess:
        log_path = self.logs / f"{logname}.log"
        with open(log_path, "ab") as logf:
            try:
                proc = subprocess.run(
                    self._airflow_cmd(*args),
                    env=self.env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                    cwd=str(self.workdir),
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise HarnessError(
                    f"`airflow {' '.join(args)}` timed out after {timeout:.0f} s:\n{tail(log_path)}"
                ) from None
        if proc.returncode != 0:
            raise HarnessError(
                f"`airflow {' '.join(args)}` failed (rc={proc.returncode}):\n{tail(log_path)}"
            )
        return proc

    def _spawn(self, name: str, cmd: list[str]) -> _Component:
        log_path = self.logs / f"{name}.log"
        logf = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        popen = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(self.workdir),
            start_new_session=True,
        )
        comp = _Component(name, popen, log_path, logf)
        self._components.append(comp)
        return comp

    def _start_api_server(self) -> None:
        for attempt in range(3):
            comp = self._spawn(
                "api-server",
                self._airflow_cmd(
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.api_port),
                    "--workers",
                    "1",
                ),
            )
            try:
                self._poll(
                    lambda: self._health_or_none(),
                    "api-server to answer /api/v2/monitor/health",
                    self.startup_timeout,
                    logs=[comp.log],
                )
                self._token = self._fetch_token()
                return
            except HarnessError:
                text = tail(comp.log, 200)
                if (
                    comp.popen.poll() is None
                    or "address already in use" not in text.lower()
                    or attempt == 2
                ):
                    raise
                # Lost a port race: pick a new port (the execution API URL changes with it) and retry.
                self._terminate([comp], 10)
                self._components.remove(comp)
                self.api_port = free_port()
                self.env = self._airflow_env()

    def _wait_healthy(self) -> None:
        def ready():
            h = self._health_or_none()
            if not h:
                return None
            wanted = ["metadatabase", "scheduler", "dag_processor"] + (
                ["triggerer"] if self.start_triggerer else []
            )
            return h if all((h.get(k) or {}).get("status") == "healthy" for k in wanted) else None

        self._poll(ready, "scheduler and dag-processor to report healthy", self.startup_timeout)

    def _terminate(self, comps: Iterable[_Component], timeout: float) -> None:
        comps = [c for c in comps if c.popen.poll() is None]
        # Remember every descendant now: a SIGTERMed parent can exit before its children do.
        descendants: list[psutil.Process] = []
        for c in comps:
            with contextlib.suppress(psutil.Error):
                descendants += psutil.Process(c.popen.pid).children(recursive=True)
        for c in comps:
            _signal_group(c.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in comps:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        _, alive = psutil.wait_procs(descendants, timeout=max(0.1, deadline - time.monotonic()))
        for c in comps:
            if c.popen.poll() is None:
                _signal_group(c.popen.pid, signal.SIGKILL)
            _signal_group(c.popen.pid, signal.SIGKILL)  # leftover children still in the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.popen.wait(timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)

    def _sweep_marker(self, marker: str) -> None:
        me = os.getpid()
        exclude = {me, *(p.pid for p in psutil.Process(me).parents())}
        victims = []
        for p in psutil.process_iter(["pid"]):
            if p.pid in exclude:
                continue
            with contextlib.suppress(psutil.Error):
                if p.environ().get("AIRFLOW_HARNESS_ID") == marker:
                    victims.append(p)
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(victims, timeout=5)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)

    def leftover_processes(self) -> list[psutil.Process]:
        """Processes still carrying this deployment's marker (should be empty after stop())."""
        out = []
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error):
                if (
                    p.environ().get("AIRFLOW_HARNESS_ID", "").startswith(self.marker)
                    and p.pid != os.getpid()
                ):
                    out.append(p)
        return out

    # ------------------------------------------------------------------ waiting helpers

    def _check_alive(self) -> None:
        for c in [*self._components, *([self._pg] if self._pg else [])]:
            rc = c.popen.poll()
            if rc is not None:
                raise HarnessError(
                    f"{c.name} exited unexpectedly (rc={rc}); last lines of {c.log}:\n{tail(c.log)}"
                )

    def _log_tails(self, logs: Iterable[Path] | None = None, lines: int = 40) -> str:
        paths = list(logs) if logs is not None else [c.log for c in self._components]
        return "\n".join(f"----- tail of {p} -----\n{tail(p, lines)}" for p in paths)

    def _poll(
        self,
        fn: Callable[[], Any],
        what: str,
        timeout: float,
        interval: float = 1.0,
        logs: Iterable[Path] | None = None,
        extra: Callable[[], str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + timeout
        last_exc: BaseException | None = None
        while True:
            self._check_alive()
            try:
                result = fn()
                if result is not None:
                    return result
            except HarnessError:
                raise
            except Exception as exc:  # noqa: BLE001 - remember the last error for the timeout message
                last_exc = exc
            if time.monotonic() >= deadline:
                msg = f"Timed out after {timeout:.0f} s waiting for {what}."
                if last_exc is not None:
                    msg += f" Last error: {last_exc!r}."
                if extra is not None:
                    with contextlib.suppress(Exception):
                        msg += "\n" + extra()
                raise HarnessError(msg + "\n" + self._log_tails(logs))
            time.sleep(interval)

    # ------------------------------------------------------------------ REST API (urllib only)

    def _health_or_none(self) -> dict | None:
        try:
            return self._raw("GET", "/api/v2/monitor/health", auth=False)
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def _fetch_token(self) -> str | None:
        try:
            return self._raw("GET", "/auth/token", auth=False)["access_token"]
        except (
            urllib.error.HTTPError
        ) as exc:  # not all-admins: fall back to the middleware-less path
            if exc.code in (403, 404, 405):
                return None
            raise

    def _raw(
        self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 30
    ) -> Any:
        url = f"http://127.0.0.1:{self.api_port}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth and self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        with self._opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        """Call the REST API; raise HarnessError with the response body on HTTP errors."""
        for attempt in (1, 2):
            try:
                return self._raw(method, path, body, timeout=timeout)
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")
                if exc.code == 401 and attempt == 1:  # token expired: fetch a new one once
                    self._token = self._fetch_token()
                    continue
                raise HarnessError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        raise AssertionError("unreachable")

    def _paged(self, path: str, key: str) -> list[dict]:
        items: list[dict] = []
        sep = "&" if "?" in path else "?"
        while True:
            page = self.api("GET", f"{path}{sep}limit=100&offset={len(items)}")
            batch = page.get(key) or []
            items += batch
            if not batch or len(items) >= page.get("total_entries", 0):
                return items

    @staticmethod
    def _q(s: str) -> str:
        return urllib.parse.quote(s, safe="")

    # ------------------------------------------------------------------ public test API

    def get_dag(self, dag_id: str) -> dict | None:
        try:
            return self._raw("GET", f"/api/v2/dags/{self._q(dag_id)}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def import_errors(self) -> list[dict]:
        return self._paged("/api/v2/importErrors", "import_errors")

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the dag-processor has parsed ``dag_id`` and return its DAG record."""

        def extra() -> str:
            return "Import errors: " + json.dumps(self.import_errors(), indent=1)[:4000]

        return self._poll(
            lambda: self.get_dag(dag_id),
            f"DAG {dag_id!r} to be parsed",
            timeout,
            logs=[self.logs / "dag-processor.log", self.logs / "scheduler.log"],
            extra=extra,
        )

    def unpause(self, dag_id: str) -> None:
        dag = self.api(
            "PATCH", f"/api/v2/dags/{self._q(dag_id)}?update_mask=is_paused", {"is_paused": False}
        )
        if dag.get("is_paused"):
            raise HarnessError(f"DAG {dag_id} is still paused after PATCH: {dag}")

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        """Create a manual run (``logical_date`` null, run_after now) and return its run_id."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        run = self.api("POST", f"/api/v2/dags/{self._q(dag_id)}/dagRuns", body)
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait until the run is ``success`` or ``failed``; return that state."""

        def final():
            state = self.dag_run(dag_id, run_id)["state"]
            return state if state in FINAL_RUN_STATES else None

        def extra() -> str:
            tis = self.task_instances(dag_id, run_id)
            return "Task instances: " + ", ".join(
                f"{t['task_id']}[{t['map_index']}]={t['state']}" for t in tis
            )

        return self._poll(final, f"run {dag_id}/{run_id} to finish", timeout, extra=extra)

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self._paged(f"/api/v2/dags/{self._q(dag_id)}/dagRuns?order_by=id", "dag_runs")

    def wait_for_new_run(
        self,
        dag_id: str,
        run_type: str | None = None,
        timeout: float = 120,
        exclude: Iterable[str] = (),
    ) -> dict:
        """Wait for a run of ``dag_id`` (e.g. ``run_type="asset_triggered"``) not in ``exclude``."""
        excluded = set(exclude)

        def found():
            for r in self.dag_runs(dag_id):
                if r["dag_run_id"] not in excluded and (
                    run_type is None or r["run_type"] == run_type
                ):
                    return r
            return None

        return self._poll(found, f"a {run_type or 'new'} run of {dag_id!r}", timeout)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """All task instances of a run, including every map index of mapped tasks."""
        return self._paged(
            f"/api/v2/dags/{self._q(dag_id)}/dagRuns/{self._q(run_id)}/taskInstances?order_by=map_index",
            "task_instances",
        )


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True: the process group id is the child's pid
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
