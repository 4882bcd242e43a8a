"""The quality gate between building and publishing: nothing that fails it is published.

Checks here are whole-warehouse invariants that no single dbt model owns. The gate raises
`QualityGateError` naming every failed check and by how much; `publish` never runs after it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .build import dbt_args, failures, run_dbt
from .config import WarehousePaths
from .warehouse import connect


class QualityGateError(RuntimeError):
    """A check at error level failed: the warehouse must not be published."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateReport:
    checks: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]


def check_row_accounting(paths: WarehousePaths) -> CheckResult:
    """Every applied delivery accounts for its rows: received = loaded + quarantined."""
    con = connect(paths.work, read_only=True)
    try:
        broken = con.execute(
            "select delivery_id, table_name, received, loaded, quarantined "
            "from audit.delivery_tables where received <> loaded + quarantined "
            "order by all").fetchall()
        (quarantine_gap,) = con.execute(
            "select count(*) from (select delivery_id, table_name, sum(quarantined) as n "
            "from audit.delivery_tables group by all) t full join (select delivery_id, "
            "table_name, count(*) as n from audit.quarantine group by all) q "
            "using (delivery_id, table_name) where coalesce(t.n, 0) <> coalesce(q.n, 0)"
        ).fetchone()
    finally:
        con.close()
    if broken or quarantine_gap:
        detail = "; ".join(f"{d} {t}: received {r} != loaded {lo} + quarantined {q}"
                           for d, t, r, lo, q in broken)
        if quarantine_gap:
            detail += f"; {quarantine_gap} table(s) whose quarantine rows differ from the count"
        return CheckResult("row_accounting", False, detail.strip("; "))
    return CheckResult("row_accounting", True, "received = loaded + quarantined everywhere")


def check_dbt_tests(paths: WarehousePaths) -> CheckResult:
    """Every dbt data and unit test passes over the built warehouse as it now stands."""
    passed, failed = failures(*run_dbt(dbt_args("test", paths), paths))
    if failed:
        return CheckResult("dbt_tests", False, "; ".join(failed))
    return CheckResult("dbt_tests", True, f"{passed} dbt tests passed")


def gate(paths: WarehousePaths, run_dbt_tests: bool = True) -> GateReport:
    """Run the checks; raise QualityGateError if any fails.

    `run_dbt_tests` is False when the caller has just run `dbt build`, whose tests ran
    over the same tables.
    """
    checks = [check_row_accounting(paths)]
    if run_dbt_tests:
        checks.append(check_dbt_tests(paths))
    report = GateReport(checks)
    if report.failed:
        raise QualityGateError("quality gate failed, nothing published:\n  " + "\n  ".join(
            f"{c.name}: {c.detail}" for c in report.failed))
    return report
