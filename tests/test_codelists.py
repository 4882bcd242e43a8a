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
    assert codelist.codes_in("related_referral") == ["390893007", "837111000000105",
                                                     "771491000000104"]
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


@pytest.mark.parametrize("code, problem", [
    ("871731000000106", None),
    ("32911000", None),
    ("871731000000107", "Verhoeff check digit fails"),
    ("12345", "5 digits, not 6 to 18"),
    ("871731000000206", "partition 20 is not a concept partition (00 or 10)"),
    ("87173100000010A", "not all digits"),
])
def test_snomed_ids_are_checked_for_length_partition_and_check_digit(code, problem):
    assert snomed_problem(code) == problem
