"""Which practices a build rebuilds: the incremental build's scope, recorded in the warehouse.

The unit of analysis is a patient at a practice and controls are matched within practice, so
every heavy dbt model is a union of independent per-practice parts. A build therefore only
needs to rebuild the practices whose data changed since the last build that succeeded: those
named by a delivery applied after it started. Everything else is kept as it is.

A build rebuilds everything when there is no earlier successful build, when it is asked to,
or when anything its output depends on beyond the deliveries changed: the dbt project's files,
the codelist, the dbt vars, or the versions of dbt and DuckDB. These are hashed together into a
fingerprint kept with each build.

The scope is written to `audit.build_scopes` (one row per build) and `audit.build_practices`
(the practices each build rebuilds; every practice on a full rebuild), the record the quality
gate and the next build's plan read. dbt is told the scope, never left to look it up: every
`dbt build` of a build gets it in the environment variable SPRX_BUILD (`dbt_env`, the one
place a build becomes dbt's input), from `sprx build`, Airflow's Cosmos tasks (templated from
the `start_build` task's XCom) and the Spark build alike. Not a dbt var: dbt re-parses the
whole project whenever its vars change, and this value changes with every build; the macro
reads the variable only while executing, so dbt's partial parse survives (macros/
build_scope.sql). A person may still pass the same value as the var `sprx_build`; a caller's
var of that name is dropped from a build's vars and left out of the fingerprint
(`PER_BUILD_VARS`). dbt run by hand without either rebuilds everything (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from .config import DBT_PROJECT_DIR

# Files in the dbt project that do not change what it builds.
_NOT_PROJECT = {"target", "logs", "dbt_packages", "__pycache__", ".user.yml", "profiles.yml"}
_ENGINE_PACKAGES = ("dbt-core", "dbt-duckdb", "duckdb")
_SPARK_PACKAGES = ("dbt-spark", "pyspark")
_SUCCEEDED = ("success", "published")
# The environment variable that tells dbt which build it runs and what that build rebuilds,
# and the dbt var a person may pass the same value in by hand (it wins over the variable).
BUILD_ENV = "SPRX_BUILD"
BUILD_VAR = "sprx_build"
# Vars that name one build, not what a build makes: never part of the fingerprint, and set by
# the build itself, never taken from a caller's vars.
PER_BUILD_VARS = frozenset({BUILD_VAR})


@dataclass(frozen=True)
class BuildScope:
    """What one build rebuilds, and why."""

    full_rebuild: bool
    reason: str
    fingerprint: str
    practices: tuple[str, ...]

    def describe(self) -> str:
        if self.full_rebuild:
            return f"full rebuild ({self.reason})"
        return f"incremental: {len(self.practices)} practice(s) rebuilt ({self.reason})"


def project_files(project_dir: Path = DBT_PROJECT_DIR) -> list[Path]:
    """The files of the dbt project that define what it builds, in a stable order."""
    return sorted(
        p
        for p in project_dir.rglob("*")
        if p.is_file() and not _NOT_PROJECT.intersection(p.relative_to(project_dir).parts)
    )


def fingerprint(
    codelist_sha256: str,
    dbt_vars: dict[str, Any],
    project_dir: Path = DBT_PROJECT_DIR,
    engine: str = "duckdb",
) -> str:
    """SHA-256 over everything a build's output depends on besides the delivered rows.

    A build on another engine (`spark`) hashes its name and versions too, so the first
    DuckDB build after it rebuilds in full: the DuckDB intermediate tables did not make
    the marts it left."""
    digest = hashlib.sha256()
    for path in project_files(project_dir):
        digest.update(
            str(path.relative_to(project_dir)).encode() + b"\0" + path.read_bytes() + b"\0"
        )
    versions = {name: metadata.version(name) for name in _ENGINE_PACKAGES}
    parts = {"codelist": codelist_sha256, "vars": without_per_build(dbt_vars), "engine": versions}
    if engine != "duckdb":
        parts["engine_name"] = engine
        versions.update({name: _version(name) for name in _SPARK_PACKAGES})
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()


def without_per_build(dbt_vars: dict[str, Any]) -> dict[str, Any]:
    """`dbt_vars` less the vars that name one build (`PER_BUILD_VARS`): what it builds."""
    return {name: value for name, value in dbt_vars.items() if name not in PER_BUILD_VARS}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def plan(
    con: duckdb.DuckDBPyConnection,
    build_fingerprint: str,
    full_rebuild: bool = False,
    engine: str = "duckdb",
) -> BuildScope:
    """Decide what the next build rebuilds, from the warehouse's record of earlier builds.
    Builds on an engine other than DuckDB are always full (docs/spark.md)."""
    every_practice = tuple(
        r[0]
        for r in con.execute(
            "select distinct p.practice_id from audit.delivery_practices p join audit.deliveries d "
            "using (delivery_id) where d.status = 'applied' order by 1"
        ).fetchall()
    )
    last = con.execute(
        "select b.build_id, b.started_at, s.fingerprint from audit.builds b "
        "join audit.build_scopes s using (build_id) where b.status in (?, ?) "
        "order by b.started_at desc limit 1",
        list(_SUCCEEDED),
    ).fetchone()

    def full(reason: str) -> BuildScope:
        return BuildScope(True, reason, build_fingerprint, every_practice)

    if full_rebuild:
        return full("asked for")
    if engine != "duckdb":
        return full(f"the {engine} engine builds in full; incremental builds are DuckDB's")
    if last is None:
        return full("no earlier successful build")
    last_id, last_started, last_fingerprint = last
    if last_fingerprint != build_fingerprint:
        return full(f"dbt project, codelist, dbt vars or engine changed since build {last_id}")
    changed = tuple(
        r[0]
        for r in con.execute(
            "select distinct p.practice_id from audit.delivery_practices p join audit.deliveries d "
            "using (delivery_id) where d.status = 'applied' and d.applied_at > ? order by 1",
            [last_started],
        ).fetchall()
    )
    return BuildScope(
        False, f"deliveries applied since build {last_id}", build_fingerprint, changed
    )


def record(con: duckdb.DuckDBPyConnection, build_id: str, scope: BuildScope) -> None:
    """Record a build's scope in audit.build_scopes and audit.build_practices."""
    con.execute(
        "insert into audit.build_scopes values (?, now()::timestamp, ?, ?, ?, ?)",
        [build_id, scope.full_rebuild, scope.reason, scope.fingerprint, len(scope.practices)],
    )
    if scope.practices:
        con.executemany(
            "insert into audit.build_practices values (?, ?)",
            [(build_id, practice) for practice in scope.practices],
        )


def recorded(con: duckdb.DuckDBPyConnection, build_id: str) -> BuildScope:
    """The scope `record` wrote for `build_id` (for a build opened in one task and run in
    another); ValueError if the build has none."""
    row = con.execute(
        "select full_rebuild, reason, fingerprint from audit.build_scopes where build_id = ?",
        [build_id],
    ).fetchone()
    if row is None:
        raise ValueError(f"build {build_id} has no recorded scope in audit.build_scopes")
    practices = con.execute(
        "select practice_id from audit.build_practices where build_id = ? order by 1", [build_id]
    ).fetchall()
    return BuildScope(row[0], row[1], row[2], tuple(p for (p,) in practices))


def build_value(build_id: str, planned: BuildScope) -> str:
    """What a build passes to dbt: its id, whether it rebuilds everything, and otherwise the
    practices it rebuilds, as JSON text (macros/build_scope.sql reads it).

    JSON text, not a mapping, because Airflow renders a templated value as text: `sprx build`
    and the Cosmos tasks then hand dbt the same string. A full rebuild lists no practices (dbt
    takes every practice with an applied delivery), so the value stays small however large
    the network; an incremental build lists only what changed."""
    build: dict[str, Any] = {"id": build_id, "full_rebuild": planned.full_rebuild}
    if not planned.full_rebuild:
        build["practices"] = list(planned.practices)
    return json.dumps(build, sort_keys=True)


def dbt_env(build_id: str, planned: BuildScope) -> dict[str, str]:
    """The environment a `dbt build` of this build runs with, beyond the warehouse's own:
    SPRX_BUILD, the build (`build_value`)."""
    return {BUILD_ENV: build_value(build_id, planned)}
