"""Versioned codelists: read, verify against their pinned hash, and record in the warehouse.

SP coding is sparse and coarse, so the list that defines a referral is data with a version,
not a constant in SQL. A list is refused when its bytes differ from the hash its manifest
pins, when a code is not a SNOMED CT concept id, or when a category is unknown.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .snomed import snomed_problem

CATEGORIES = ("referral", "declined", "related_referral", "homeless")
MANIFEST_NAME = "manifest.json"


class CodelistError(ValueError):
    """A codelist or its manifest is missing, malformed or has drifted from its pin."""


@dataclass(frozen=True)
class Code:
    code: str
    term: str
    category: str


@dataclass(frozen=True)
class Codelist:
    name: str
    version: str
    sha256: str
    codes: tuple[Code, ...]

    def codes_in(self, category: str) -> list[str]:
        return [c.code for c in self.codes if c.category == category]


def parse_codelist_csv(data: bytes, where: str) -> tuple[Code, ...]:
    """Parse OpenCodelists-shaped CSV bytes (`code,term,category`) and check every row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CodelistError(f"{where}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if header[:2] != ["code", "term"] or "category" not in header:
        raise CodelistError(f"{where}: header must be code,term,category; got {','.join(header)}")
    codes, seen = [], set()
    for line, row in enumerate(reader, start=2):
        code, category = (row.get("code") or "").strip(), (row.get("category") or "").strip()
        if problem := snomed_problem(code):
            raise CodelistError(f"{where} line {line}: code {code!r} is not a SNOMED CT "
                                f"concept id ({problem})")
        if category not in CATEGORIES:
            raise CodelistError(f"{where} line {line}: category {category!r} is not one of "
                                f"{', '.join(CATEGORIES)}")
        if code in seen:
            raise CodelistError(f"{where} line {line}: code {code} is listed twice")
        seen.add(code)
        codes.append(Code(code, (row.get("term") or "").strip(), category))
    if not codes:
        raise CodelistError(f"{where}: the list has no codes")
    return tuple(codes)


def read_manifest(folder: Path) -> dict[str, dict]:
    """The `codelists` object of a codelist folder's manifest, keyed by list name."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise CodelistError(f"{path}: no codelist manifest; expected {MANIFEST_NAME} in {folder}")
    try:
        lists = json.loads(path.read_text(encoding="utf-8"))["codelists"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CodelistError(f"{path}: malformed manifest ({exc})") from None
    for name, entry in lists.items():
        if not isinstance(entry, dict) or not {"version", "path", "sha256"} <= set(entry):
            raise CodelistError(f"{path}: list {name!r} needs version, path and sha256")
    return lists


def verify_codelist(name: str, entry: dict, data: bytes, where: str) -> Codelist:
    """Check a list's bytes against its pinned hash, then parse it."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry["sha256"].lower():
        raise CodelistError(
            f"{where}: content has drifted from version {entry['version']} (pinned sha256 "
            f"{entry['sha256'][:12]}…, file has {actual[:12]}…); publish it as a new version "
            "with its new hash")
    return Codelist(name, str(entry["version"]), actual, parse_codelist_csv(data, where))


def load_codelist(folder: Path, name: str) -> Codelist:
    """Read list `name` from a codelist folder and verify it against the folder's manifest."""
    lists = read_manifest(folder)
    if name not in lists:
        raise CodelistError(f"{folder / MANIFEST_NAME}: no list named {name!r} "
                            f"(has {', '.join(lists) or 'none'})")
    path = folder / lists[name]["path"]
    if not path.is_file():
        raise CodelistError(f"{path}: file named by the manifest is missing")
    return verify_codelist(name, lists[name], path.read_bytes(), str(path))


def record_codelist(con: duckdb.DuckDBPyConnection, codelist: Codelist) -> None:
    """Make `codelist` the active list in `codelists.sp_codes` (the dbt source)."""
    rows = [(codelist.name, codelist.version, c.code, c.term, c.category) for c in codelist.codes]
    con.execute("begin")
    con.execute("delete from codelists.sp_codes")
    con.executemany("insert into codelists.sp_codes values (?, ?, ?, ?, ?)", rows)
    con.execute("commit")
