"""docker-compose.yml started for real: the team server as a user runs it, on a real engine.

One run for the module (the `stack` fixture): a Docker engine (tests/docker_engine.py starts
dockerd when none runs), the pipeline image built from the Dockerfile on a local base image,
and the compose services of docker-compose.yml with tests/compose/host-network.yml, which
swaps the two official images for local ones and puts every service on 127.0.0.1 (these
machines have no image registry and no bridge network). Credentials come from a `.env` made by
`src/sprx_pipeline/server.py env`, with three named users: `admin` (admin), `alice` (user: may
trigger runs) and `bob` (viewer). Then, through the REST API, as a user would:

1. alice unpauses both DAGs; the catch-up run of `sprx_extracts` finds an empty landing area
   and triggers nothing; the tiny extract's two deliveries arrive; alice triggers
   `sprx_extracts`, and `sprx_warehouse` starts by itself from the `sprx_extracts` asset,
   builds and publishes;
2. bob reads the runs and a task's log, and is refused a trigger; nobody anonymous gets in;
3. the dashboard service (read-only mount, no network, no credentials) reads every published
   mart, and cannot write to the warehouse.

Everything is collected, then the stack is removed (`down --volumes`) before the tests below
look at what was collected; the engine started here is stopped at the end of the module, even
when a step fails. The same tiny extract run on the host with `sprx run` gives the row counts
the published marts must have, and the list of files the package opens at run time, which the
image must hold.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psutil
import pytest
import yaml
from airflow_api import AirflowUser
from docker_engine import Compose, DockerEngine, DockerError, base_image, free_port, run, say
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tiny_extract import write_tiny_extract

from sprx_pipeline import server
from sprx_pipeline.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

PRODUCTION = PROJECT_ROOT / "docker-compose.yml"
OVERRIDE = PROJECT_ROOT / "tests" / "compose" / "host-network.yml"
OPEN_AUDIT = PROJECT_ROOT / "tests" / "open_audit"
IMAGE = "sprx-pipeline-airflow:0.1.0"
USERS = "admin:admin,alice:user,bob:viewer"
TINY_DELIVERIES = ["2019-06-30_tpp_001", "2020-01-31_emis_001"]
CREDENTIALS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "SPRX_AIRFLOW_USERS",
    "SPRX_AIRFLOW_PASSWORDS",
)
# Hang guards, not speed targets: a cold run builds the base image and the pipeline image
# (debootstrap, pip install of the team server's set) before anything starts.
BUILD_SECONDS, START_SECONDS, BUILD_RUN_SECONDS = 1800, 600, 1800

# Runs in the dashboard container (python -, on stdin): what a reader sees and may do.
READER = r"""
import json, os
from importlib.metadata import distributions
import duckdb
from sprx_pipeline import release
from sprx_pipeline.config import PROJECT_ROOT, WarehousePaths, default_warehouse

paths = WarehousePaths.at(default_warehouse())
folder = str(paths.published.parent)
out = {"credentials": sorted(k for k in os.environ if any(
           word in k for word in ("PASSWORD", "SECRET", "FERNET", "SQL_ALCHEMY", "AUTH"))),
       "interfaces": sorted(os.listdir("/sys/class/net")),
       "mount": [line.split()[3].split(",")[0] for line in open("/proc/mounts")
                 if line.split()[1] == folder]}
with duckdb.connect(str(paths.published), read_only=True) as con:
    marts = [t for (t,) in con.execute("select table_name from duckdb_tables() "
                                       "where schema_name = 'marts' order by 1").fetchall()]
    out["rows"] = {t: con.execute(f'select count(*) from marts."{t}"').fetchone()[0]
                   for t in marts}
    out["build_id"] = con.execute("select build_id from meta.publication").fetchone()[0]
out["released"] = sorted(t.name for t in release.RELEASED_TABLES)
out["distributions"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
out["parquet"] = sorted(p.stem for p in paths.parquet.glob("*.parquet"))

def refusal(action):
    try:
        action()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

out["write_a_file"] = refusal(lambda: (paths.published.parent / "by-a-reader").write_text("x"))
out["open_for_writing"] = refusal(lambda: duckdb.connect(str(paths.published)).close())
out["files"] = sorted(str(p.relative_to(PROJECT_ROOT)) for p in PROJECT_ROOT.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts)
print("READER " + json.dumps(out))
"""

DAGBAG = """
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(sorted(bag.dag_ids))
"""


@dataclass
class StackRun:
    """What the compose run showed, collected before the stack was removed."""

    seconds: dict[str, float] = field(default_factory=dict)
    image_bytes: dict[str, int] = field(default_factory=dict)
    caught_up: dict = field(default_factory=dict)
    warehouse_runs_after_catch_up: list = field(default_factory=list)
    extracts: dict = field(default_factory=dict)
    extracts_tasks: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    build_tasks: dict = field(default_factory=dict)
    codes: dict = field(default_factory=dict)
    viewer: dict = field(default_factory=dict)
    summary: str = ""
    reader: dict = field(default_factory=dict)
    listening: list = field(default_factory=list)
    leftovers: str = ""


@dataclass(frozen=True)
class HostResult:
    opened: set[str]  # files under the checkout that the package opened, repo-relative
    rows: dict[str, int]  # rows of each published mart


class HostRun:
    """`sprx run` of the tiny extract, and the DAG files parsed, on the host, with every file
    that any of their Python processes (dbt's included) opens recorded. It runs in a thread
    while the images build, as it needs the CPU and they mostly wait for the network."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._result: HostResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="host-run", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._collect()
        except BaseException as exc:  # noqa: BLE001 - raised in result()
            self._error = exc

    def _collect(self) -> HostResult:
        landing = write_tiny_extract(self.root / "landing")
        warehouse = self.root / "warehouse" / "sprx.duckdb"
        log = self.root / "opened.log"
        env = {
            **os.environ,
            "PYTHONPATH": str(OPEN_AUDIT),
            "SPRX_OPEN_AUDIT_LOG": str(log),
            "SPRX_LANDING_DIR": str(landing),
            "SPRX_WAREHOUSE_PATH": str(warehouse),
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
            # Cosmos would keep its `dbt ls` in an Airflow variable: no database here.
            "AIRFLOW__COSMOS__ENABLE_CACHE_DBT_LS": "False",
        }
        sprx = str(Path(sys.executable).with_name("sprx"))
        run(
            [sprx, "run", "--landing", str(landing), "--warehouse", str(warehouse)],
            timeout=900,
            env=env,
        )
        run([sys.executable, "-c", DAGBAG, str(PROJECT_ROOT / "dags")], timeout=600, env=env)
        opened = set()
        for line in log.read_text().splitlines():
            path = Path(line)
            if path.is_relative_to(PROJECT_ROOT) and path.is_file():
                rel = path.relative_to(PROJECT_ROOT)
                if rel.parts[0] not in (".venv", "tests") and "__pycache__" not in rel.parts:
                    opened.add(rel.as_posix())
        with duckdb.connect(str(warehouse), read_only=True) as con:
            marts = [
                t
                for (t,) in con.execute(
                    "select table_name from duckdb_tables() where schema_name = 'marts'"
                ).fetchall()
            ]
            rows = {
                t: con.execute(f'select count(*) from marts."{t}"').fetchone()[0] for t in marts
            }
        return HostResult(opened, rows)

    def result(self) -> HostResult:
        self._thread.join(timeout=1800)
        if self._error is not None:
            raise self._error
        assert self._result is not None, "the host run did not finish in 30 minutes"
        return self._result


def requirement_closure(name: str, extras: frozenset[str] = frozenset()) -> dict[str, str]:
    """{name: version} of `name[extras]` and every distribution it needs, transitively, read
    from the metadata of this venv (which holds the whole lock, so every version is the
    lock's): what `pip install -c requirements.lock "name[extras]"` installs."""
    needed: dict[str, str] = {}
    pending, seen = [(name, extras)], set()
    while pending:
        dist_name, wanted = pending.pop()
        if (canonicalize_name(dist_name), wanted) in seen:
            continue
        seen.add((canonicalize_name(dist_name), wanted))
        dist = importlib.metadata.distribution(dist_name)
        needed[canonicalize_name(dist_name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted or {""}
            ):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return needed


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    try:
        yield engine.start()
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def host_run(tmp_path_factory) -> Iterator[HostRun]:
    runner = HostRun(tmp_path_factory.mktemp("host-run"))
    yield runner
    with contextlib.suppress(BaseException):  # not left running past the module
        runner.result()


def env_file_for_test(folder: Path, base: str, landing: Path) -> tuple[Path, dict[str, str]]:
    """A `.env` as a team makes it, plus the test's image and ports; and its values."""
    api_port, pg_port = free_port(), free_port()
    text = server.env_file(USERS).replace("SPRX_API_PORT=8080", f"SPRX_API_PORT={api_port}")
    text += f"SPRX_LANDING={landing}\nSPRX_TEST_BASE_IMAGE={base}\nSPRX_TEST_PG_PORT={pg_port}\n"
    path = folder / ".env"
    path.write_text(text)
    path.chmod(0o600)
    values = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    return path, values


def compose_config(
    engine: DockerEngine, env_file: Path, *files: Path, check: bool = True
) -> subprocess.CompletedProcess:
    """`docker-compose config`: the files merged and interpolated, as compose reads them."""
    args = ["docker-compose", "--env-file", str(env_file)]
    for file in files:
        args += ["-f", str(file)]
    return run([*args, "config"], timeout=120, env=engine.env, check=check)


def resolved_for_host_network(engine: DockerEngine, env_file: Path, out: Path) -> Path:
    """The merged configuration, minus port mappings of services in the host's network.

    docker-compose 1.29 refuses `ports` under `network_mode: host` (docker-py: "host
    network_mode is incompatible with port_bindings"; newer compose ignores them with a
    warning), and an override cannot remove a list entry, so the test drops them here.
    """
    merged = yaml.safe_load(compose_config(engine, env_file, PRODUCTION, OVERRIDE).stdout)
    for service in merged["services"].values():
        if service.get("network_mode") == "host":
            service.pop("ports", None)
    out.write_text(yaml.safe_dump(merged, sort_keys=False))
    return out


def listening_sockets(engine: DockerEngine, project: str) -> list[tuple[str, int, str]]:
    """(address, port, process) of every TCP socket a process of the project listens on."""
    ids = engine.docker(
        "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}"
    ).stdout.split()
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or conn.pid is None:
            continue
        try:
            cgroup = Path(f"/proc/{conn.pid}/cgroup").read_text()
            name = psutil.Process(conn.pid).name()
        except (OSError, psutil.Error):
            continue
        if any(i in cgroup for i in ids):
            found.append((conn.laddr.ip, conn.laddr.port, name))
    return sorted(set(found))


def state_by_task(instances: list[dict]) -> dict[str, str]:
    return {
        (
            ti["task_id"]
            if ti["map_index"] < 0
            else f"{ti['task_id']}[{ti['rendered_map_index'] or ti['map_index']}]"
        ): ti["state"]
        for ti in instances
    }


@pytest.fixture(scope="module")
def stack(engine, host_run, tmp_path_factory) -> StackRun:  # host_run: started first
    root = tmp_path_factory.mktemp("compose")
    landing = root / "landing"
    landing.mkdir(mode=0o755)
    seen = StackRun()
    started = time.monotonic()

    def lap(name: str) -> None:
        seen.seconds[name] = round(time.monotonic() - started)
        say(f"{name}: {seen.seconds[name]} s since the start")

    base = base_image(engine)
    lap("base image ready")
    env_file, values = env_file_for_test(root, base, landing)
    project = f"sprxtest{os.getpid()}"
    compose = Compose(
        engine, project, resolved_for_host_network(engine, env_file, root / "compose.yml")
    )
    passwords = server.parse_passwords(values["SPRX_AIRFLOW_PASSWORDS"])
    url = f"http://127.0.0.1:{values['SPRX_API_PORT']}"
    try:
        say("building the postgres stand-in and the pipeline image (pip install of .[airflow])")
        compose("build", "postgres", "airflow-init", timeout=BUILD_SECONDS)
        lap("images built")
        for tag in (base, IMAGE, "sprx-local-postgres:15"):
            seen.image_bytes[tag] = engine.image_size(tag)
        compose("up", "-d", "--no-build", timeout=START_SECONDS)
        alice = AirflowUser(url, "alice", passwords["alice"])
        alice.wait_healthy(START_SECONDS)
        alice.login()
        for dag_id in ("sprx_warehouse", "sprx_extracts"):
            alice.wait_for_dag(dag_id, START_SECONDS)
        lap("stack up")
        run_pipeline_as_alice(alice, landing, seen)
        lap("warehouse built and published")
        look_as_viewer_and_strangers(url, passwords, seen)
        seen.listening = listening_sockets(engine, project)
        seen.summary = compose(
            "--profile", "dashboard", "run", "--rm", "-T", "dashboard", timeout=300
        ).stdout
        reader = compose(
            "--profile",
            "dashboard",
            "run",
            "--rm",
            "-T",
            "dashboard",
            "python",
            "-",
            input=READER,
            timeout=300,
        ).stdout
        seen.reader = json.loads(
            next(line for line in reader.splitlines() if line.startswith("READER "))[7:]
        )
        lap("dashboard read")
    except Exception as exc:
        raise DockerError(f"{exc}\n----- the stack's logs -----\n{compose.logs()}") from exc
    finally:
        compose.down()
        seen.leftovers = " ".join(
            [
                engine.docker(
                    "ps",
                    "-aq",
                    "--filter",
                    f"label=com.docker.compose.project={project}",
                    check=False,
                ).stdout.strip(),
                engine.docker(
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    f"label=com.docker.compose.project={project}",
                    check=False,
                ).stdout.strip(),
            ]
        ).strip()
        lap("stack removed")
    print(
        f"\ncompose test: {json.dumps(seen.seconds)}; images: "
        + ", ".join(f"{t} {b / 1e6:.0f} MB" for t, b in seen.image_bytes.items())
    )
    # Where the time went, kept for the next reader (make test hides a passing test's output).
    (engine.state_dir / "last-run.json").write_text(
        json.dumps({"seconds_since_start": seen.seconds, "image_bytes": seen.image_bytes}, indent=1)
    )
    (root / "viewer.json").write_text(json.dumps(seen.viewer, indent=1))
    return seen


def run_pipeline_as_alice(alice: AirflowUser, landing: Path, seen: StackRun) -> None:
    """Unpause, let the catch-up run find nothing, deliver, trigger, wait for the build."""
    for dag_id in ("sprx_warehouse", "sprx_extracts"):
        assert alice.unpause(dag_id)["is_paused"] is False
    # Unpausing starts the latest missed schedule at once; the landing area is still empty.
    caught_up = alice.wait_for_new_run("sprx_extracts", "scheduled", START_SECONDS)
    seen.caught_up = alice.wait_for_run("sprx_extracts", caught_up["dag_run_id"], 600)
    seen.warehouse_runs_after_catch_up = alice.dag_runs("sprx_warehouse")

    write_tiny_extract(landing)  # deliveries arrive; alice triggers a pull
    run_id = alice.trigger("sprx_extracts")["dag_run_id"]
    seen.extracts = alice.wait_for_run("sprx_extracts", run_id, 900)
    seen.extracts_tasks = state_by_task(alice.task_instances("sprx_extracts", run_id))
    build = alice.wait_for_new_run("sprx_warehouse", "asset_triggered", 600)
    # 43 dbt tasks go one at a time through the one-slot pool.
    seen.build = alice.wait_for_run("sprx_warehouse", build["dag_run_id"], BUILD_RUN_SECONDS)
    seen.build_tasks = state_by_task(alice.task_instances("sprx_warehouse", build["dag_run_id"]))


def look_as_viewer_and_strangers(url: str, passwords: dict[str, str], seen: StackRun) -> None:
    """What bob (viewer) sees and may do; what alice may not; what a stranger gets."""
    bob = AirflowUser(url, "bob", passwords["bob"]).login()
    alice = AirflowUser(url, "alice", passwords["alice"]).login()
    stranger = AirflowUser(url)
    build_id = seen.build["dag_run_id"]
    runs_before = len(bob.dag_runs("sprx_extracts"))
    seen.codes = {
        "stranger lists DAGs": stranger.status("GET", "/api/v2/dags"),
        "stranger triggers": stranger.status(
            "POST", "/api/v2/dags/sprx_extracts/dagRuns", {"logical_date": None}
        ),
        "wrong password": stranger.status(
            "POST", "/auth/token", {"username": "bob", "password": "not-bob's-password"}
        ),
        "bob lists DAGs": bob.status("GET", "/api/v2/dags"),
        "bob reads a task log": bob.status(
            "GET", f"/api/v2/dags/sprx_warehouse/dagRuns/{build_id}/taskInstances/publish/logs/1"
        ),
        "bob triggers": bob.status(
            "POST", "/api/v2/dags/sprx_extracts/dagRuns", {"logical_date": None}
        ),
        "bob pauses": bob.status(
            "PATCH", "/api/v2/dags/sprx_extracts?update_mask=is_paused", {"is_paused": True}
        ),
        "bob reads connections": bob.status("GET", "/api/v2/connections"),
        "bob reads variables": bob.status("GET", "/api/v2/variables"),
        "bob reads pools": bob.status("GET", "/api/v2/pools"),
        "alice resizes the writer pool": alice.status(
            "PATCH",
            "/api/v2/pools/sprx_duckdb?update_mask=slots",
            {"name": "sprx_duckdb", "slots": 2},
        ),
    }
    seen.codes["runs added by refused triggers"] = len(bob.dag_runs("sprx_extracts")) - runs_before
    dags = bob.api("GET", "/api/v2/dags")["dags"]
    seen.viewer = {
        "dags": {d["dag_id"]: {"paused": d["is_paused"]} for d in dags},
        "runs": {
            dag_id: [
                (r["run_type"], r["state"], r.get("triggering_user_name"))
                for r in bob.dag_runs(dag_id)
            ]
            for dag_id in ("sprx_extracts", "sprx_warehouse")
        },
        "publish log": bob.task_log("sprx_warehouse", build_id, "publish")[-3000:],
        "pools": {p["name"]: p["slots"] for p in bob.api("GET", "/api/v2/pools")["pools"]},
    }


# --- the tests ----------------------------------------------------------------------------


def test_the_warehouse_is_built_from_the_asset_after_alice_triggers_the_extracts(stack):
    assert stack.caught_up["state"] == "success"
    assert stack.warehouse_runs_after_catch_up == []  # nothing applied, no asset event
    assert stack.extracts["state"] == "success"
    assert stack.extracts["triggering_user_name"] == "alice"
    assert {k: v for k, v in stack.extracts_tasks.items() if k.startswith("apply_delivery")} == {
        f"apply_delivery[{d}]": "success" for d in TINY_DELIVERIES
    }
    assert stack.build["run_type"] == "asset_triggered"
    assert stack.build["state"] == "success", stack.build_tasks
    tasks = stack.build_tasks
    assert tasks["check_loaded"] == tasks["quality_gate"] == tasks["publish"] == "success"
    assert sum(t.startswith("dbt_build.") for t in tasks) == 50  # 47 models, 3 tests


def test_strangers_and_a_viewer_are_refused_what_their_role_does_not_allow(stack):
    assert stack.codes == {
        "stranger lists DAGs": 401,
        "stranger triggers": 401,
        "wrong password": 401,
        "bob lists DAGs": 200,
        "bob reads a task log": 200,
        "bob triggers": 403,
        "bob pauses": 403,
        "bob reads connections": 403,
        "bob reads variables": 403,
        "bob reads pools": 200,
        "alice resizes the writer pool": 403,
        "runs added by refused triggers": 0,
    }


def test_a_viewer_sees_the_dags_their_runs_who_triggered_them_and_the_task_logs(stack):
    viewer = stack.viewer
    assert viewer["dags"] == {
        "sprx_codelists": {"paused": True},
        "sprx_extracts": {"paused": False},
        "sprx_warehouse": {"paused": False},
    }
    assert viewer["runs"]["sprx_extracts"] == [
        ("scheduled", "success", None),
        ("manual", "success", "alice"),
    ]
    assert viewer["runs"]["sprx_warehouse"] == [("asset_triggered", "success", None)]
    assert viewer["pools"]["sprx_duckdb"] == 1
    assert "sprx.duckdb" in viewer["publish log"]


def test_the_dashboard_reads_every_published_mart_with_the_rows_sprx_run_gives(stack, host_run):
    reader = stack.reader
    assert set(reader["released"]) <= set(reader["rows"])  # the release reads these marts
    assert reader["parquet"] == sorted(reader["rows"])  # publish exports every mart
    assert reader["rows"] == host_run.result().rows
    assert all(rows > 0 for rows in reader["rows"].values()), reader["rows"]
    assert re.search(r"^  deliveries applied +2$", stack.summary, re.MULTILINE), stack.summary


def test_the_dashboard_cannot_write_and_holds_no_network_or_credentials(stack):
    reader = stack.reader
    assert reader["mount"] == ["ro"]
    assert "Read-only file system" in reader["write_a_file"]
    assert reader["open_for_writing"] is not None  # DuckDB refuses to open it for writing
    assert reader["interfaces"] == ["lo"]
    assert reader["credentials"] == []


def test_the_image_holds_every_file_the_package_opens_at_run_time(stack, host_run):
    opened = host_run.result().opened
    assert {p.split("/")[0] for p in opened} == {
        "codelists",
        "dags",
        "dbt_project",
        "expectations",
        "src",
        "vendor",
    }
    assert sorted(opened - set(stack.reader["files"])) == []


def test_the_image_holds_the_team_servers_set_at_the_locks_versions_and_nothing_more(stack):
    # The package with its `airflow` extra, not the whole lock: no PySpark, dbt-spark, test or
    # lint tools. (On the test's base image, whose venv starts with pip and setuptools only;
    # the official image brings Airflow's own providers besides.)
    in_image = {
        canonicalize_name(name): version
        for name, version in (line.split("==") for line in stack.reader["distributions"])
        if canonicalize_name(name) not in ("pip", "setuptools", "wheel")
    }
    assert in_image == requirement_closure("sprx-pipeline", frozenset({"airflow"}))
    assert not {"pyspark", "dbt-spark", "pytest", "ruff", "sqlfluff"} & set(in_image)


def test_every_service_listens_on_loopback_only(stack):
    assert stack.listening, "no listening socket found"
    assert {address for address, _, _ in stack.listening} == {"127.0.0.1"}, stack.listening


def test_the_stack_is_removed_with_its_volumes(stack):
    assert stack.leftovers == ""


def test_compose_refuses_to_start_without_each_credential(engine, tmp_path):
    complete = server.env_file(USERS)
    for name in CREDENTIALS:
        env_file = tmp_path / f"without-{name}.env"
        env_file.write_text(
            "\n".join(line for line in complete.splitlines() if not line.startswith(f"{name}="))
            + "\n"
        )
        done = compose_config(engine, env_file, PRODUCTION, check=False)
        assert done.returncode != 0 and f"set {name}" in done.stderr, (name, done.stderr)
    env_file = tmp_path / "complete.env"
    env_file.write_text(complete)
    assert compose_config(engine, env_file, PRODUCTION).returncode == 0


def test_the_override_changes_only_what_these_machines_cannot_offer(engine, tmp_path):
    env_file, _ = env_file_for_test(tmp_path, "sprx-local-base:any", tmp_path)
    production = yaml.safe_load(compose_config(engine, env_file, PRODUCTION).stdout)
    merged = yaml.safe_load(
        resolved_for_host_network(engine, env_file, tmp_path / "c.yml").read_text()
    )
    airflow = ["airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor"]
    expected = {
        ("services", "postgres", key) for key in ("image", "build", "network_mode", "command")
    }
    expected |= {("services", "postgres", "environment", "PGPORT")}
    for name in airflow:
        expected |= {
            ("services", name, "network_mode"),
            ("services", name, "build", "network"),
            ("services", name, "build", "args"),
        }
        expected |= {
            ("services", name, "environment", key)
            for key in (
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                "AIRFLOW__API__HOST",
                "AIRFLOW__API__PORT",
            )
        }
    expected |= {
        ("services", "airflow-api-server", "ports"),
        ("services", "airflow-scheduler", "command"),
    }
    assert differences(production, merged) == expected
    assert merged["services"]["airflow-scheduler"]["command"] == [
        *production["services"]["airflow-scheduler"]["command"],
        "--skip-serve-logs",
    ]
    assert production["services"]["postgres"]["image"] == "postgres:15"
    assert "network_mode" not in production["services"]["airflow-scheduler"]  # a bridge


def differences(a: object, b: object, path: tuple = ()) -> set[tuple]:
    """The paths at which two parsed configurations differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {
            p for key in set(a) | set(b) for p in differences(a.get(key), b.get(key), (*path, key))
        }
    return set() if a == b else {path}
