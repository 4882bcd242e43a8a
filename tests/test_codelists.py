"""Codelists are versioned data: verified against their pin, or refused with a reason."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from sprx_pipeline.codelists import CodelistError, load_codelist
from sprx_pipeline.config import DEFAULT_CODELIST_DIR, SP_CODELIST
from sprx_pipeline.snomed import snomed_problem


def test_default_list_holds_the_verified_codes_of_the_domain_brief():
    codelist = load_codelist(DEFAULT_CODELIST_DIR, SP_CODELIST)
    assert codelist.version == "2026-11-22.1"
    assert codelist.codes_in("referral") == ["871731000000106"]
    assert codelist.codes_in("declined") == ["871711000000103"]
    assert codelist.codes_in("related_referral") == [
        "390893007",
        "837111000000105",
        "771491000000104",
    ]
    assert codelist.codes_in("homeless") == ["32911000"]


@pytest.fixture
def folder(tmp_path):
    target = tmp_path / "codelists"
    shutil.copytree(DEFAULT_CODELIST_DIR, target)
    return target


def _repin(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / "social-prescribing.csv").read_bytes()
    manifest["codelists"][SP_CODELIST]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_list_that_drifted_from_its_pinned_hash_is_refused(folder):
    with open(folder / "social-prescribing.csv", "a") as handle:
        handle.write("1234567890,Made up,referral\n")
    with pytest.raises(CodelistError, match="drifted from version 2026-11-22.1"):
        load_codelist(folder, SP_CODELIST)


def test_a_code_failing_the_verhoeff_check_is_refused_even_when_pinned(folder):
    with open(folder / "social-prescribing.csv", "a") as handle:
        handle.write("871731000000107,Typo,referral\n")
    _repin(folder)
    with pytest.raises(CodelistError, match="line 8: code '871731000000107'.*Verhoeff"):
        load_codelist(folder, SP_CODELIST)


def test_an_unknown_category_is_refused(folder):
    with open(folder / "social-prescribing.csv", "a") as handle:
        handle.write("38341003,Hypertension,offered\n")
    _repin(folder)
    with pytest.raises(CodelistError, match="category 'offered' is not one of"):
        load_codelist(folder, SP_CODELIST)


@pytest.mark.parametrize(
    "code, problem",
    [
        ("871731000000106", None),
        ("32911000", None),
        ("871731000000107", "Verhoeff check digit fails"),
        ("12345", "5 digits, not 6 to 18"),
        ("871731000000206", "partition 20 is not a concept partition (00 or 10)"),
        ("87173100000010A", "not all digits"),
    ],
)
def test_snomed_ids_are_checked_for_length_partition_and_check_digit(code, problem):
    assert snomed_problem(code) == problem


@pytest.fixture
def served(folder):
    """The codelist folder served over HTTP on a loopback port."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=10)


def test_a_list_pulled_over_http_is_verified_kept_and_recorded(served, tmp_path):
    import duckdb

    from sprx_pipeline.config import WarehousePaths
    from sprx_pipeline.pipeline import active_codelist, pull_codelists

    folder, url = served
    paths = WarehousePaths.at(tmp_path / "wh" / "sprx.duckdb")
    (pulled,) = pull_codelists(paths, url, pins=DEFAULT_CODELIST_DIR / "manifest.json")
    assert (pulled.version, len(pulled.codes)) == ("2026-11-22.1", 6)
    assert active_codelist(paths).sha256 == pulled.sha256

    with open(folder / "social-prescribing.csv", "a") as handle:  # the server's copy drifts
        handle.write("1234567890,Made up,referral\n")
    with pytest.raises(CodelistError, match=f"{url}social-prescribing.csv: content has drifted"):
        pull_codelists(paths, url, pins=DEFAULT_CODELIST_DIR / "manifest.json")
    assert active_codelist(paths).sha256 == pulled.sha256  # the last good pull stays in force
    with duckdb.connect(str(paths.work), read_only=True) as con:
        rows = con.execute(
            "select version, status, source from audit.codelist_pulls order by pulled_at"
        ).fetchall()
    assert rows == [("2026-11-22.1", "verified", url), (None, "refused", url)]


def test_an_unreachable_source_is_a_fetch_error_worth_retrying(tmp_path):
    from sprx_pipeline.codelists import CodelistFetchError

    with pytest.raises(CodelistFetchError, match="could not fetch"):
        load_codelist("http://127.0.0.1:9/", SP_CODELIST, DEFAULT_CODELIST_DIR / "manifest.json")
