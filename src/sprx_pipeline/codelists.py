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
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from .config import DEFAULT_CODELIST_DIR
from .snomed import snomed_problem

CATEGORIES = ("referral", "declined", "related_referral", "homeless")
MANIFEST_NAME = "manifest.json"
DEFAULT_PINS = DEFAULT_CODELIST_DIR / MANIFEST_NAME


class CodelistError(ValueError):
    """A codelist or its manifest is missing, malformed or has drifted from its pin."""


class CodelistFetchError(CodelistError):
    """The source could not be reached: worth retrying, unlike a refused list."""


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
    data: bytes = field(default=b"", compare=False, repr=False)

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
            raise CodelistError(
                f"{where} line {line}: code {code!r} is not a SNOMED CT concept id ({problem})"
            )
        if category not in CATEGORIES:
            raise CodelistError(
                f"{where} line {line}: category {category!r} is not one of {', '.join(CATEGORIES)}"
            )
        if code in seen:
            raise CodelistError(f"{where} line {line}: code {code} is listed twice")
        seen.add(code)
        codes.append(Code(code, (row.get("term") or "").strip(), category))
    if not codes:
        raise CodelistError(f"{where}: the list has no codes")
    return tuple(codes)


def read_pins(path: Path) -> dict[str, dict]:
    """The `codelists` object of a codelist manifest (the pins), keyed by list name."""
    if not path.is_file():
        raise CodelistError(
            f"{path}: no codelist manifest; expected {MANIFEST_NAME} pinning "
            "each list's version and sha256"
        )
    try:
        lists = json.loads(path.read_text(encoding="utf-8"))["codelists"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CodelistError(f"{path}: malformed manifest ({exc})") from None
    for name, entry in lists.items():
        if not isinstance(entry, dict) or not {"version", "path", "sha256"} <= set(entry):
            raise CodelistError(f"{path}: list {name!r} needs version, path and sha256")
    return lists


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def pins_for(source: str, pins: Path | None = None) -> Path:
    """Which manifest pins a source: the one given, else the source folder's, else the repo's."""
    if pins is not None:
        return pins
    if not is_url(source) and (Path(source) / MANIFEST_NAME).is_file():
        return Path(source) / MANIFEST_NAME
    return DEFAULT_PINS


def fetch(source: str, relative: str, timeout: float = 30.0) -> bytes:
    """The bytes of `relative` under a source: a local folder or an HTTP(S) base URL."""
    if is_url(source):
        url = f"{source.rstrip('/')}/{relative}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CodelistFetchError(f"{url}: could not fetch the codelist ({exc})") from None
    path = Path(source) / relative
    if not path.is_file():
        raise CodelistError(f"{path}: file named by the manifest is missing")
    return path.read_bytes()


def verify_codelist(name: str, entry: dict, data: bytes, where: str) -> Codelist:
    """Check a list's bytes against its pinned hash, then parse it."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry["sha256"].lower():
        raise CodelistError(
            f"{where}: content has drifted from version {entry['version']} (pinned sha256 "
            f"{entry['sha256'][:12]}…, file has {actual[:12]}…); publish it as a new version "
            "with its new hash"
        )
    return Codelist(name, str(entry["version"]), actual, parse_codelist_csv(data, where), data)


def load_codelist(source: str | Path, name: str, pins: Path | None = None) -> Codelist:
    """Fetch list `name` from a source and verify it against its pinned version and hash."""
    source = str(source)
    pin_path = pins_for(source, pins)
    lists = read_pins(pin_path)
    if name not in lists:
        raise CodelistError(
            f"{pin_path}: no list named {name!r} (has {', '.join(lists) or 'none'})"
        )
    entry = lists[name]
    where = f"{source.rstrip('/')}/{entry['path']}"
    return verify_codelist(name, entry, fetch(source, entry["path"]), where)


def load_all(source: str | Path, pins: Path | None = None) -> list[Codelist]:
    """Every list the pins name, fetched from `source` and verified."""
    pin_path = pins_for(str(source), pins)
    return [load_codelist(source, name, pin_path) for name in read_pins(pin_path)]


def write_cache(folder: Path, codelists: list[Codelist]) -> Path:
    """Keep verified lists byte for byte, with a manifest pinning them, as a codelist folder.

    Builds read this folder, so a build never depends on the source being reachable. Each
    file is replaced whole by a rename, so a process killed part-way leaves every file
    either as it was or as it should be, never half-written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for codelist in codelists:
        file_name = f"{codelist.name}.csv"
        _replace_file(folder / file_name, codelist.data)
        manifest[codelist.name] = {
            "version": codelist.version,
            "path": file_name,
            "sha256": codelist.sha256,
        }
    text = json.dumps({"codelists": manifest}, indent=2, sort_keys=True) + "\n"
    _replace_file(folder / MANIFEST_NAME, text.encode("utf-8"))
    return folder


def _replace_file(path: Path, data: bytes) -> None:
    """Give `path` these bytes by writing a temporary file and renaming it (no-op if equal)."""
    if path.is_file() and path.read_bytes() == data:
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def record_codelist(con: duckdb.DuckDBPyConnection, codelist: Codelist) -> None:
    """Make `codelist` the active list in `codelists.sp_codes` (the dbt source)."""
    rows = [(codelist.name, codelist.version, c.code, c.term, c.category) for c in codelist.codes]
    con.execute("begin")
    con.execute("delete from codelists.sp_codes")
    con.executemany("insert into codelists.sp_codes values (?, ?, ?, ?, ?)", rows)
    con.execute("commit")
