"""The study is declared once: a measure added to dbt_project.yml's vars, and nowhere else,
reaches the marts, the release and the report.

The project is copied to a temporary folder (SPRX_PROJECT_ROOT points the CLI at it), one
measure is added to its `outcome_measures` (elective admissions: hospital attendances whose
setting is elective_admission, which the extract contract allows and no measure counts yet),
the suites are regenerated from the declaration (`python -m sprx_pipeline.suites`, as after
any edit), and the tiny extract is run, released and reported through the CLI; the docs'
tables of the declaration are regenerated from the copy (`python -m sprx_pipeline.study_docs`).
The new measure is declared a headline, so the run's summary and the report's tiles lead with
it too.

By hand: the tiny extract's one elective admission, H04, is EDGE's on 2017-07-01, 16 days
after its index date 2017-06-15: one post-window event of a referred patient, none before,
and none for any control.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from tiny_extract import write_tiny_extract

from sprx_pipeline import study_docs
from sprx_pipeline.config import PROJECT_ROOT, data_docs_assets

SPRX = str(Path(sys.executable).with_name("sprx"))
NEW_MEASURE = """\
    elective_admissions:
      label: "Elective admissions"
      source: hospital_attendances
      filter: "setting = 'elective_admission'"
      headline: true
      plausible_rate_per_1000_py: [1.0, 2000.0]
"""


def _copy_project(root: Path) -> Path:
    """The dbt project, codelists and suites, without any build's artefacts."""
    ignore = shutil.ignore_patterns("target", "logs", ".user.yml", "dbt_packages")
    for folder in ("dbt_project", "codelists", "expectations"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=ignore)
    return root


def _declare_measure(project: Path) -> None:
    """Add NEW_MEASURE as the last of the declared outcome measures: the one edit."""
    path = project / "dbt_project" / "dbt_project.yml"
    lines = path.read_text().splitlines(keepends=True)
    start = lines.index("  outcome_measures:\n")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    "))
    lines.insert(end, NEW_MEASURE)
    path.write_text("".join(lines))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_measure_declared_once_reaches_marts_release_and_report(tmp_path: Path) -> None:
    project = _copy_project(tmp_path / "project")
    _declare_measure(project)
    env = {
        **os.environ,
        "SPRX_PROJECT_ROOT": str(project),
        "SPRX_DATA_DOCS_ASSETS": str(data_docs_assets()),
    }
    landing = write_tiny_extract(tmp_path / "landing")
    warehouse = tmp_path / "warehouse" / "sprx.duckdb"
    release, report = tmp_path / "release", tmp_path / "report.html"

    _run(env, sys.executable, "-m", "sprx_pipeline.suites")
    run = _run(env, SPRX, "run", "--landing", str(landing), "--warehouse", str(warehouse))
    methods = shutil.copy(PROJECT_ROOT / "docs" / "methods.md", tmp_path / "methods.md")
    _run(env, sys.executable, "-m", "sprx_pipeline.study_docs", "--doc", str(methods))
    _run(env, SPRX, "release", "--warehouse", str(warehouse), "--out", str(release))
    _run(env, SPRX, "report", "--release", str(release), "--out", str(report))

    with duckdb.connect(str(warehouse), read_only=True) as con:
        edge = con.execute(
            "select pre_elective_admissions, post_elective_admissions, "
            "post_emergency_admissions, post_consultations_video "
            "from marts.sp_patient_outcomes where patient_id = 'EDGE'"
        ).fetchone()
        controls = con.execute(
            "select sum(pre_elective_admissions + post_elective_admissions) "
            "from marts.sp_matched_controls"
        ).fetchone()
        summary = con.execute(
            'select cohort, "window", events from marts.sp_outcome_summary '
            "where measure = 'elective_admissions' order by cohort, \"window\""
        ).fetchall()
        estimates = con.execute(
            "select count(*) from marts.sp_effect_estimates where measure = 'elective_admissions'"
        ).fetchone()
        measures = [
            m
            for (m,) in con.execute(
                "select distinct measure from marts.sp_outcome_rates order by measure"
            ).fetchall()
        ]
    # The new measure's columns, counted by hand; the declared ones are as they were.
    assert edge == (0, 1, 1, 1)
    assert controls == (0,)
    assert summary == [
        ("control", "post", 0),
        ("control", "pre", 0),
        ("referred", "post", 1),
        ("referred", "pre", 0),
    ]
    assert estimates == (8,)  # the effect and three descriptive ratios; all and homeless
    assert measures == [
        "ae_attendances",
        "consultations",
        "elective_admissions",
        "emergency_admissions",
    ]

    released = _rows(release / "sp_outcome_summary.csv")
    assert {r["window"] for r in released if r["measure"] == "elective_admissions"} == {
        "pre",
        "post",
    }
    assert any(
        r["measure"] == "elective_admissions" for r in _rows(release / "sp_effect_estimates.csv")
    )
    html = report.read_text(encoding="utf-8")
    assert "Elective admissions: effect of referral" in html  # its headline tile
    assert "Elective admissions: effect of referral (95% CI)" in run.stdout
    assert (
        "| `elective_admissions` | Elective admissions | `hospital_attendances` "
        "| `setting = 'elective_admission'` |  | yes | 1 to 2,000 |"
    ) in Path(methods).read_text(encoding="utf-8")


def test_the_docs_tables_of_the_study_are_generated_from_the_declaration() -> None:
    """docs/methods.md's tables of measures, breakdowns, windows and released classes are
    what `python -m sprx_pipeline.study_docs` writes from dbt_project.yml's vars now."""
    assert study_docs.main(["--check"]) == 0
    block = study_docs.render()
    assert "| `controls_per_case` | 5 |" in block
    assert "| `imd_quintile` | IMD quintile (1 = most deprived) | yes | `unknown` |" in block
    assert "| count | redacted at 7 or fewer, others rounded to the nearest 5 |" in block
