"""Tests of the synthetic extract generator: the files keep the contract, and the figures land
where domain.md says real extracts do.

Most checks read one 20,000-patient extract (generated once per module) with DuckDB SQL, the
way the loader will; each contract rule is a query that counts the rows breaking it.
"""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sprx_pipeline.contract import (
    ATTENDANCE_SETTINGS,
    CONSULTATION_MODES,
    ETHNICITIES,
    REGIONS,
    SEXES,
    STAFF_ROLES,
    TABLES,
    read_manifest,
    sha256_file,
)
from sprx_pipeline.snomed import is_concept_id
from sprx_pipeline.synthetic import CausalModel, GenerationSummary, generate

EXTRACTED_AT = date(2020, 1, 31)
REFERRAL, DECLINED = "871731000000106", "871711000000103"
pytestmark = pytest.mark.slow  # every test here but the last generates an extract
_SQL_TYPES = {
    "id": "VARCHAR",
    "text": "VARCHAR",
    "code": "VARCHAR",
    "int": "BIGINT",
    "date": "DATE",
    "number": "DOUBLE",
}


def _load(root: Path, extracted_at: date = EXTRACTED_AT) -> duckdb.DuckDBPyConnection:
    """All deliveries under root as one DuckDB table per contract table, plus `reg`:
    registered spells clipped to [2013-01-01, extracted_at] and death."""
    con = duckdb.connect()
    for table, spec in TABLES.items():
        parts = []
        for manifest in sorted(root.glob("*/manifest.json")):
            path = manifest.parent / json.loads(manifest.read_text())["files"][table]["path"]
            if path.name.endswith(".parquet"):
                parts.append(f"select * from read_parquet('{path}')")
            else:
                columns = ", ".join(f"'{c.name}': '{_SQL_TYPES[c.kind]}'" for c in spec.columns)
                parts.append(
                    f"select * from read_csv('{path}', header = true, columns = {{{columns}}})"
                )
        con.execute(f"create table {table} as {' union all by name '.join(parts)}")
    con.execute(f"""
        create table reg as
        select r.patient_id, r.practice_id, greatest(r.start_date, date '2013-01-01') as s,
               least(coalesce(r.end_date, date '{extracted_at}'), date '{extracted_at}',
                     coalesce(p.date_of_death, date '{extracted_at}')) as e
        from registrations as r join patients as p using (patient_id, practice_id)""")
    return con


@pytest.fixture(scope="module")
def extract(tmp_path_factory) -> tuple[GenerationSummary, duckdb.DuckDBPyConnection]:
    messages: list[str] = []
    summary = generate(
        tmp_path_factory.mktemp("landing"),
        patients=20_000,
        practices=20,
        seed=42,
        extracted_at=EXTRACTED_AT,
        progress=messages.append,
    )
    assert messages[-1].startswith("practices ") and messages[-1].endswith(")")
    assert len(messages) == len(summary.deliveries)
    return summary, _load(summary.out_dir)


def _one(con, sql: str):
    return con.execute(sql).fetchone()[0]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_same_arguments_give_identical_files(tmp_path):
    first = generate(tmp_path / "a", patients=3_000, practices=6, seed=7)
    second = generate(tmp_path / "b", patients=3_000, practices=6, seed=7)
    other = generate(tmp_path / "c", patients=3_000, practices=6, seed=8)
    assert first.deliveries == second.deliveries and first.rows == second.rows
    hashes = _hashes(first.out_dir)
    assert len(hashes) == 7 * len(first.deliveries)
    assert hashes == _hashes(second.out_dir)
    assert hashes != _hashes(other.out_dir)
    # Gzip headers carry no modification time.
    for path in first.out_dir.rglob("*.csv.gz"):
        assert path.read_bytes()[4:8] == b"\0\0\0\0"


def test_manifests_match_files(extract):
    summary, con = extract
    assert summary.patients == 20_000 and summary.practices == 20
    systems, listed, formats = set(), [], set()
    totals = {table: 0 for table in TABLES}
    for delivery_id in summary.deliveries:
        manifest = read_manifest(summary.out_dir / delivery_id)  # the contract's own checks
        raw = manifest.raw
        assert raw["kind"] == "full" and raw["contract_version"] == "1"
        assert raw["extracted_at"] == "2020-01-31"
        assert delivery_id.startswith(f"2020-01-31_{manifest.source_system.lower()}_")
        assert 1 <= len(manifest.practices) <= 10
        systems.add(manifest.source_system)
        listed += manifest.practices
        assert set(manifest.files) == set(TABLES)
        for table, entry in manifest.files.items():
            csv = manifest.source_system in ("EMIS", "Vision")
            formats.add(entry.format)
            assert entry.path.name == table + (".csv.gz" if csv else ".parquet")
            assert sha256_file(entry.path) == entry.sha256
            reader = "read_parquet" if not csv else "read_csv"
            assert _one(con, f"select count(*) from {reader}('{entry.path}')") == entry.rows
            totals[table] += entry.rows
            if csv:
                with gzip.open(entry.path, "rt", encoding="utf-8") as handle:
                    assert handle.readline().rstrip("\n").split(",") == list(
                        TABLES[table].column_names
                    )
            else:
                schema = pq.read_schema(entry.path)
                assert schema.names == list(TABLES[table].column_names)
                kinds = {c.name: c.kind for c in TABLES[table].columns}
                for field in schema:
                    expected = {"date": pa.date32(), "int": pa.int64(), "number": pa.float64()}
                    assert field.type == expected.get(kinds[field.name], pa.string())
            # Every row comes from a practice the manifest lists.
            strays = _one(
                con,
                f"""select count(*) from {reader}('{entry.path}')
                where practice_id not in ({", ".join(f"'{p}'" for p in manifest.practices)})""",
            )
            assert strays == 0
    assert totals == summary.rows
    assert sorted(listed) == [f"P{i:05d}" for i in range(1, 21)]
    assert len(systems) >= 2 and formats == {"csv", "parquet"}
    assert summary.rows["patients"] == 20_000
    assert _one(con, "select count(distinct region) from practices") >= 3


_ID_COLUMNS = [(t, c.name) for t, spec in TABLES.items() for c in spec.columns if c.kind == "id"]
_EVENT_DATES = {
    "consultations": "consultation_date",
    "clinical_events": "event_date",
    "hospital_attendances": "attendance_date",
}


def _in(values) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _contract_rules(extracted_at: date) -> dict[str, str]:
    """Each contract rule as a query counting the rows that break it."""
    x = f"date '{extracted_at}'"
    return {
        **{
            f"{t}.{c} id format": f"select count(*) from {t} where {c} is not null "
            f"and not regexp_full_match({c}, '[A-Za-z0-9_-]{{1,64}}')"
            for t, c in _ID_COLUMNS
        },
        **{
            f"{t} key unique": f"select count(*) - count(distinct ({', '.join(spec.key)})) from {t}"
            for t, spec in TABLES.items()
        },
        "ids not null": "select "
        + " + ".join(
            f"(select count(*) from {t} where {c} is null)"
            for t, c in _ID_COLUMNS
            if c != "consultation_id" or t != "clinical_events"
        ),
        "region allowed": f"select count(*) from practices where region not in {_in(REGIONS)}",
        "year_of_birth range": f"select count(*) from patients where year_of_birth not between 1900 and {extracted_at.year}",
        "sex allowed": f"select count(*) from patients where sex is null or sex not in {_in(SEXES)}",
        "ethnicity allowed": f"select count(*) from patients where ethnicity is null or ethnicity not in {_in(ETHNICITIES)}",
        "imd range": "select count(*) from patients where imd_quintile not between 1 and 5",
        "rural_urban allowed": "select count(*) from patients where rural_urban not in ('urban', 'rural')",
        "death not after extract": f"select count(*) from patients where date_of_death > {x}",
        "death not before birth year": "select count(*) from patients where year(date_of_death) < year_of_birth",
        "registration dates": f"""select count(*) from registrations where start_date is null
            or start_date > {x} or end_date < start_date or end_date > {x}""",
        "registration not before birth year": """select count(*) from registrations join patients
            using (patient_id, practice_id) where year(start_date) < year_of_birth""",
        "registrations do not overlap": """select count(*) from registrations a join registrations b
            using (patient_id, practice_id) where a.registration_id < b.registration_id
            and a.start_date <= coalesce(b.end_date, date '9999-12-31')
            and b.start_date <= coalesce(a.end_date, date '9999-12-31')""",
        "death ends registration": """select count(*) from patients p where date_of_death is not null
            and (not exists (select 1 from registrations r where r.patient_id = p.patient_id
                             and r.practice_id = p.practice_id and r.end_date = p.date_of_death)
                 or exists (select 1 from registrations r where r.patient_id = p.patient_id
                            and r.practice_id = p.practice_id
                            and coalesce(r.end_date, date '9999-12-31') > p.date_of_death))""",
        "mode allowed": f"select count(*) from consultations where mode not in {_in(CONSULTATION_MODES)} or mode is null",
        "staff_role allowed": f"select count(*) from consultations where staff_role not in {_in(STAFF_ROLES)} or staff_role is null",
        "setting allowed": f"select count(*) from hospital_attendances where setting not in {_in(ATTENDANCE_SETTINGS)} or setting is null",
        "snomed digits": "select count(*) from clinical_events where not regexp_full_match(snomed_code, '[0-9]{6,18}')",
        **{
            f"{t} patient exists in practice": f"""select count(*) from {t} x where not exists
            (select 1 from patients p where p.patient_id = x.patient_id and p.practice_id = x.practice_id)"""
            for t in ("registrations", *_EVENT_DATES)
        },
        "patient practice listed": "select count(*) from patients where practice_id not in (select practice_id from practices)",
        **{
            f"{t} dated within the patient's life and extract": f"""select count(*) from {t} x join patients p
            using (patient_id, practice_id) where x.{c} is null or x.{c} > {x}
            or year(x.{c}) < p.year_of_birth or x.{c} > p.date_of_death"""
            for t, c in _EVENT_DATES.items()
        },
        "event consultation exists, same patient and day": """select count(*) from clinical_events e
            where consultation_id is not null and not exists (select 1 from consultations c
            where c.consultation_id = e.consultation_id and c.patient_id = e.patient_id
            and c.consultation_date = e.event_date)""",
        "consultations on registered days": """select count(*) from consultations c where not exists
            (select 1 from reg r where r.patient_id = c.patient_id and r.practice_id = c.practice_id
             and c.consultation_date between r.s and r.e)""",
        "SP codes on registered days": f"""select count(*) from clinical_events e
            where snomed_code in {_in([REFERRAL, DECLINED, "390893007", "837111000000105", "771491000000104", "32911000"])}
            and not exists (select 1 from reg r where r.patient_id = e.patient_id
            and r.practice_id = e.practice_id and e.event_date between r.s and r.e)""",
        "referral has a consultation": f"""select count(*) from clinical_events
            where snomed_code = '{REFERRAL}' and consultation_id is null""",
    }


CONTRACT_RULES = _contract_rules(EXTRACTED_AT)


@pytest.mark.parametrize("rule", CONTRACT_RULES)
def test_contract_rule_holds(extract, rule):
    _, con = extract
    assert _one(con, CONTRACT_RULES[rule]) == 0


def test_codes_are_snomed_ids(extract):
    _, con = extract
    codes = [
        row[0] for row in con.execute("select distinct snomed_code from clinical_events").fetchall()
    ]
    assert len(codes) == 11
    assert all(is_concept_id(code) for code in codes)


def test_csv_readable_without_hints(extract):
    summary, con = extract
    path = next(summary.out_dir.glob("*/clinical_events.csv.gz"))
    described = con.execute(f"describe select * from read_csv('{path}')").fetchall()
    assert [row[0] for row in described] == list(TABLES["clinical_events"].column_names)
    # Empty fields are nulls, not empty strings.
    assert (
        _one(
            con,
            f"select count(*) from read_csv('{path}', all_varchar = true) where consultation_id = ''",
        )
        == 0
    )
    assert _one(con, f"select count(*) from read_csv('{path}') where numeric_value is null") > 0


def _person_years(con) -> float:
    return _one(con, "select sum(greatest(e - s + 1, 0)) / 365.25 from reg")


def test_rates_per_registered_person_year(extract):
    _, con = extract
    years = _person_years(con)
    assert 90_000 < years < 120_000
    consultations = _one(
        con,
        """select count(distinct c.consultation_id) from consultations c
        join reg r using (patient_id, practice_id) where c.consultation_date between r.s and r.e""",
    )
    rates = dict(
        con.execute("""select setting, count(*) from hospital_attendances h
        join reg r using (patient_id, practice_id) where h.attendance_date between r.s and r.e
        group by setting""").fetchall()
    )
    assert 5.0 <= consultations / years <= 6.0
    assert 0.3 <= rates["ae"] / years <= 0.4
    assert 0.08 <= rates["emergency_admission"] / years <= 0.10
    assert rates["elective_admission"] > 0 and rates["outpatient"] > 0
    # About 1% of attendances fall outside registered time (noise the pipeline must handle).
    outside = 1 - sum(rates.values()) / _one(con, "select count(*) from hospital_attendances")
    assert 0.005 <= outside <= 0.02
    deaths = _one(con, "select count(*) from patients where date_of_death is not null")
    assert 0.007 <= deaths / years <= 0.013


def test_social_prescribing_uptake(extract):
    _, con = extract
    referred_2019 = _one(
        con,
        f"""select count(distinct e.patient_id) from clinical_events e
        join reg r using (patient_id, practice_id) where e.snomed_code = '{REFERRAL}'
        and year(e.event_date) = 2019 and e.event_date between r.s and r.e""",
    )
    registered_mid_2019 = _one(
        con,
        """select count(distinct patient_id) from reg
        where date '2019-07-01' between s and e""",
    )
    assert 0.01 <= referred_2019 / registered_mid_2019 <= 0.02
    codes = dict(
        con.execute(f"""select snomed_code, count(*) from clinical_events
        where snomed_code in ('{REFERRAL}', '{DECLINED}') group by 1""").fetchall()
    )
    assert 0.15 <= codes[DECLINED] / (codes[REFERRAL] + codes[DECLINED]) <= 0.25
    by_year = dict(
        con.execute(f"""select year(event_date), count(*) from clinical_events
        where snomed_code = '{REFERRAL}' group by 1""").fetchall()
    )
    assert by_year[2013] > 0 and by_year[2014] > 0  # referrals before the study start
    assert by_year[2015] < by_year[2017] < by_year[2019]  # uptake rises
    patients = _one(con, "select count(*) from patients")
    referred = _one(
        con,
        f"select count(distinct patient_id) from clinical_events where snomed_code = '{REFERRAL}'",
    )
    again = codes[REFERRAL] - referred
    assert 0.10 <= again / referred <= 0.22
    homeless = _one(
        con, "select count(distinct patient_id) from clinical_events where snomed_code = '32911000'"
    )
    assert 0.001 <= homeless / patients <= 0.006
    related = _one(
        con,
        """select count(distinct patient_id) from clinical_events
        where snomed_code in ('390893007', '837111000000105', '771491000000104')""",
    )
    assert 0.01 <= related / patients <= 0.05


def test_population_shape(extract):
    _, con = extract
    share = lambda sql: _one(con, f"select avg(case when {sql} then 1.0 else 0 end) from patients")  # noqa: E731
    assert 0.47 <= share("sex = 'F'") <= 0.52 and 0.47 <= share("sex = 'M'") <= 0.52
    assert 0 < share("sex in ('I', 'U')") < 0.03
    assert 0.72 <= share("ethnicity = 'White'") <= 0.88
    assert 0.01 <= share("imd_quintile is null") <= 0.03
    assert 0 < share("rural_urban is null") < 0.06
    assert 0.15 <= share("year_of_birth <= 1960") <= 0.35
    assert 0.05 <= share("year_of_birth >= 2013") <= 0.12  # births during the history
    twice = _one(
        con,
        """select count(*) from (select patient_id, practice_id from registrations
        group by all having count(*) = 2)""",
    )
    assert 0.01 <= twice / 20_000 <= 0.04
    late = _one(
        con,
        "select count(distinct patient_id) from registrations where start_date > date '2015-02-01'",
    )
    assert late > 1_000  # partial pre windows happen
    modes = dict(
        con.execute(
            "select mode, count(*) / sum(count(*)) over () from consultations group by 1"
        ).fetchall()
    )
    assert 0.55 <= modes["face_to_face"] <= 0.65 and 0.25 <= modes["telephone"] <= 0.35
    roles = dict(
        con.execute(
            "select staff_role, count(*) / sum(count(*)) over () from consultations group by 1"
        ).fetchall()
    )
    assert 0.55 <= roles["gp"] <= 0.65 and 0 < roles["link_worker"] < 0.02


def _window_rates(con, events_sql: str) -> tuple[float, float]:
    """Rates per registered year in the 365 days before and after each index date."""
    con.execute(f"""create or replace temp table idx as select e.patient_id, e.practice_id,
        min(e.event_date) as d from clinical_events e join reg r using (patient_id, practice_id)
        where snomed_code = '{REFERRAL}' and e.event_date between r.s and r.e
        and e.event_date between date '2015-02-01' and date '2020-01-31' group by all""")
    rates = []
    for lo, hi in ((-365, -1), (1, 365)):
        days = _one(
            con,
            f"""select sum(greatest(least(r.e, i.d + {hi}) - greatest(r.s, i.d + ({lo})) + 1, 0))
            from idx i join reg r using (patient_id, practice_id)""",
        )
        count = _one(
            con,
            f"""select count(*) from ({events_sql}) x join idx i using (patient_id, practice_id)
            join reg r using (patient_id, practice_id)
            where x.d between r.s and r.e and x.d between i.d + ({lo}) and i.d + {hi}""",
        )
        rates.append(count / days * 365.25)
    return rates[0], rates[1]


def test_referral_follows_recent_use_and_use_then_falls_by_itself(extract):
    """Referral comes when recent use is high (the model's pull of the last 90 days), and
    the referred patients' use is lower afterwards although the true effect (0.85 here)
    explains only part of the fall: the rest is the spell ending by itself."""
    _, con = extract
    consultations = "select patient_id, practice_id, consultation_date as d from consultations"
    pre, post = _window_rates(con, consultations)
    assert pre > 2 * 5.5  # referred patients consult more
    assert post / pre < 0.85 * 0.97  # more fall than the effect
    recent = _one(
        con,
        """select count(*) filter (where c.consultation_date >= i.d - 90)
            / (count(*) filter (where c.consultation_date < i.d - 90) / 275.0 * 90)
        from idx i join consultations c using (patient_id, practice_id)
        join reg r using (patient_id, practice_id)
        where c.consultation_date between i.d - 365 and i.d - 1
          and c.consultation_date between r.s and r.e and i.d - 365 >= r.s""",
    )
    assert recent > 1.15  # use peaks just before referral


def _referred_windows(root: Path) -> dict[tuple[str, str], tuple[str, int, int]]:
    """Per referred patient: index date, consultations in the 365 days before and after."""
    con = _load(root)
    con.execute(f"""create temp table first_ref as select patient_id, practice_id,
        min(event_date) as d from clinical_events where snomed_code = '{REFERRAL}' group by all""")
    rows = con.execute("""select f.practice_id, f.patient_id, f.d,
            count(*) filter (where c.consultation_date between f.d - 365 and f.d - 1),
            count(*) filter (where c.consultation_date between f.d + 1 and f.d + 365)
        from first_ref f left join consultations c using (patient_id, practice_id)
        group by all""").fetchall()
    return {(p, i): (d, pre, post) for p, i, d, pre, post in rows}


def test_the_effect_multiplies_each_referred_patients_own_counterfactual_rate(tmp_path):
    """One seed, two effects: the worlds agree on who is referred, when, and on every
    consultation before referral; after it, the effect thins the same patients' events."""
    without = _referred_windows(
        generate(
            tmp_path / "null", patients=6_000, practices=3, seed=11, model=CausalModel(effect=1.0)
        ).out_dir
    )
    with_effect = _referred_windows(
        generate(
            tmp_path / "effect", patients=6_000, practices=3, seed=11, model=CausalModel(effect=0.7)
        ).out_dir
    )
    assert without.keys() == with_effect.keys() and len(without) > 150
    assert all(without[k][:2] == with_effect[k][:2] for k in without)  # dates, pre counts
    post_without = sum(v[2] for v in without.values())
    post_with = sum(v[2] for v in with_effect.values())
    # Each post-window consultation of the world without referral kept with probability 0.7:
    # binomial, so within 4 standard errors of 0.7.
    se = (0.7 * 0.3 / post_without) ** 0.5
    assert abs(post_with / post_without - 0.7) < 4 * se


def test_small_extract_edge_cases(tmp_path):
    """A tiny extract, an early extract date and an effect that raises use keep the rules."""
    summary = generate(
        tmp_path,
        patients=40,
        practices=5,
        seed=3,
        extracted_at=date(2016, 6, 30),
        model=CausalModel(effect=1.3),
    )
    assert summary.rows["patients"] == 40 and summary.rows["practices"] == 5
    con = _load(tmp_path, date(2016, 6, 30))
    broken = {
        rule: n for rule, sql in _contract_rules(date(2016, 6, 30)).items() if (n := _one(con, sql))
    }
    assert broken == {}
    assert {t: _one(con, f"select count(*) from {t}") for t in TABLES} == summary.rows
    one = generate(tmp_path / "one", patients=1, practices=1)
    assert one.rows["patients"] == 1 and len(one.deliveries) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patients": 0},
        {"practices": 0},
        {"extracted_at": date(2012, 12, 31)},
        {"model": CausalModel(effect=0.0)},
        {"model": CausalModel(spell_consultation_factor=0.5)},
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate(tmp_path, **kwargs)
