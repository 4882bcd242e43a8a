"""Great Expectations Data Docs that open without a network.

GX's pages load Bootstrap, jQuery, Popper, bootstrap-table, Font Awesome, a date picker and
Vega from five CDNs, and its logo from Amazon S3. In a trusted research environment there is
no internet, so a data manager there would see unstyled, unsorted tables. After every build
of the Data Docs, `make_offline` copies the same files of the same versions into the site
(`static/vendor/<package>@<version>/...`) and points every page at them.

The files come from the npm registry: `fetch` runs `npm pack` for each pinned package
(`PACKAGES`), checks each tarball against the registry's SHA-512 integrity pinned here, and
keeps only the files the pages use (`config.data_docs_assets()`, `vendor/data-docs/` by
default: `make setup` fills it, and a wheel built from the checkout carries it). The two
files GX loads with a Subresource Integrity hash (Bootstrap's and Popper's scripts) are
checked against that hash before they are used: they are byte for byte what the CDN serves.
The `integrity` and `crossorigin` attributes are then dropped, since a browser refuses
cross-origin checks on file:// pages. Where the files are missing, the pages keep their CDN
links and a warning says how to fetch them; `summary.html` never needs a network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .config import data_docs_assets

log = logging.getLogger(__name__)

# package@version -> the npm registry's integrity of its tarball (`npm view <spec>
# dist.integrity`). vega, vega-lite and vega-embed are loaded as `@5`/`@6` (a CDN's latest of
# that major); they are pinned to the latest of it on 2026-12-01.
PACKAGES = {
    "bootstrap@4.3.1": "sha512-rXqOmH1VilAt2DyPzluTi2blhk17bO7ef+zLLPlWvG494pDxcM234pJ8w"
    "Tc/6R40UWizAIIMgxjvxZg5kmsbag==",
    "jquery@3.7.1": "sha512-m4avr8yL8kmFN8psrbFFFmB/If14iN5o9nw/NgnnM+kybDJpRsAynV2Bs"
    "fpTYrTRysYUdADVD7CkUUizgkpLfg==",
    "popper.js@1.12.9": "sha512-s0EEi9xiSCdqz9lV4IiVH5yIZnDX/U1t0tCjB+0jXx9jW8lrR7kOpVupi"
    "Ug175ogqVoudpDXHF1p6dKATCHMeg==",
    "bootstrap-table@1.19.1": "sha512-WvV+l1AI/C+zThaKmfHmi/IuayVNB0qdFyEhFx1jyZhO0oLtNJNANkCR3"
    "rvJf6Dkh72dsLElxpE/bzK9seEQLA==",
    "bootstrap-table@1.19.0": "sha512-L+USHm3X9FKocx/6yngGu12yF6r6s1Ntuc+hoIK2a2QQJjHw5kcySLiE2"
    "HY/9sEaSGAOfPbfQOtBH3uKkcpqEA==",
    "bootstrap-datepicker@1.9.0": "sha512-9rYYbaVOheGYxjOr/+bJCmRPihfy+LkLSg4fIFMT9Od8WwWB/MB50w0JO"
    "1eBgKUMbb7PFHQD5uAfI3ArAxZRXA==",
    "@fortawesome/fontawesome-free@6.6.0": "sha512-60G28ke/sXdtS9KZCpZSHHkCbdsOGEhIUGlwq6yhY74UpTiToIh8np7A8"
    "yphhM4BWsvNFtIvLpi4co+h9Mr9Ow==",
    "@forevolve/bootstrap-dark@1.1.0": "sha512-A3ucpEpxPoTVO490lZZCfjPXxv832l7mm1IxX3bXyxvgwnPGXDLyh7dWr"
    "phXKO8YBAu3EswbBEu3VSW8NRMW3A==",
    "vega@5.33.1": "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBA"
    "PXLCavY1LcrbHUskQbGUP8gXOzyQw==",
    "vega-lite@5.23.0": "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt"
    "3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
    "vega-embed@6.29.0": "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etz"
    "A/GzdrkceXFma+FDHNXUppKuM0U6Q==",
}

# Each address GX's templates load -> the same file in its npm package.
BOOTSTRAP_TABLE = "https://unpkg.com/bootstrap-table@"
FILTER_CONTROL = "dist/extensions/filter-control/bootstrap-table-filter-control"
DATEPICKER = "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/"
CDN_FILES = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap@4.3.1/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap@4.3.1/dist/js/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery@3.7.1/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js@1.12.9/dist/umd/popper.min.js",
    f"{BOOTSTRAP_TABLE}1.19.1/dist/bootstrap-table.min.css": "bootstrap-table@1.19.1/dist/bootstrap-table.min.css",
    f"{BOOTSTRAP_TABLE}1.19.1/dist/bootstrap-table.min.js": "bootstrap-table@1.19.1/dist/bootstrap-table.min.js",
    f"{BOOTSTRAP_TABLE}1.19.1/{FILTER_CONTROL}.min.js": f"bootstrap-table@1.19.1/{FILTER_CONTROL}.min.js",
    f"{BOOTSTRAP_TABLE}1.19.0/{FILTER_CONTROL}.min.css": f"bootstrap-table@1.19.0/{FILTER_CONTROL}.min.css",
    f"{BOOTSTRAP_TABLE}1.19.0/{FILTER_CONTROL}.css": f"bootstrap-table@1.19.0/{FILTER_CONTROL}.css",
    f"{DATEPICKER}css/bootstrap-datepicker.min.css": "bootstrap-datepicker@1.9.0/dist/css/bootstrap-datepicker.min.css",
    f"{DATEPICKER}js/bootstrap-datepicker.min.js": "bootstrap-datepicker@1.9.0/dist/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "@fortawesome/fontawesome-free@6.6.0/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": "@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega@5.33.1/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite@5.23.0/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed@6.29.0/build/vega-embed.min.js",
}
# Folders a stylesheet reaches by relative URL (Font Awesome's ../webfonts/).
EXTRA_FOLDERS = ["@fortawesome/fontawesome-free@6.6.0/webfonts"]
# GX's own images, which its pages and stylesheet load from S3 (with a tracking query).
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
VENDOR = Path("static/vendor")
PINS_FILE = "pins.json"

_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_ADDRESS = re.compile(r'\b(src|href)="([^"]+)"')
_CHECK_ATTRIBUTES = re.compile(r'\s(integrity|crossorigin)="[^"]*"')
_INTEGRITY = re.compile(r'\bintegrity="(sha\d+)-([^"]+)"')
_GX_IMAGE = re.compile(re.escape(GX_IMAGES) + r"([\w.-]+?\.(?:png|svg|gif))(\?[^\"')]*)?")


class AssetError(RuntimeError):
    """The pinned files could not be fetched or do not match their pins."""


def _package(spec_and_path: str) -> tuple[str, str]:
    """'@scope/name@1.2.3/dist/x.js' -> ('@scope/name@1.2.3', 'dist/x.js')."""
    at = spec_and_path.index("@", 1)
    slash = spec_and_path.index("/", at)
    return spec_and_path[:slash], spec_and_path[slash + 1 :]


def _wanted() -> dict[str, list[str]]:
    """package@version -> the files and folders of it that the pages use."""
    wanted: dict[str, list[str]] = {spec: [] for spec in PACKAGES}
    for item in [*CDN_FILES.values(), *EXTRA_FOLDERS]:
        spec, path = _package(item)
        wanted[spec].append(path)
    return wanted


def _integrity(path: Path, algorithm: str = "sha512") -> str:
    digest = hashlib.new(algorithm, path.read_bytes()).digest()
    return f"{algorithm}-{base64.b64encode(digest).decode()}"


def fetched(assets: Path) -> bool:
    """Whether `assets` holds every file of exactly the pinned packages."""
    pins = assets / PINS_FILE
    return (
        pins.is_file()
        and json.loads(pins.read_text()) == PACKAGES
        and all((assets / item).exists() for item in [*CDN_FILES.values(), *EXTRA_FOLDERS])
    )


def fetch(assets: Path | None = None) -> Path:
    """Fetch the pinned packages with `npm pack`, check their integrity, and keep the files
    the pages use in `assets` (replaced whole, so a changed pin leaves no stale file)."""
    assets = assets or data_docs_assets()
    if fetched(assets):
        return assets
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm is not installed: install Node.js and npm (Debian: apt-get install "
            "npm) to fetch the Data Docs assets from the npm registry"
        )
    assets.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=assets.parent) as scratch:
        tarballs, staging = Path(scratch, "tarballs"), Path(scratch, "assets")
        tarballs.mkdir()
        done = subprocess.run(
            [npm, "pack", "--json", "--silent", "--pack-destination", str(tarballs), *PACKAGES],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise AssetError(f"npm pack failed (is the npm registry reachable?):\n{done.stderr}")
        packed = {
            f"{entry['name']}@{entry['version']}": tarballs / entry["filename"]
            for entry in json.loads(done.stdout)
        }
        for spec, paths in _wanted().items():
            _extract(spec, packed[spec], paths, staging / spec)
        (staging / PINS_FILE).write_text(json.dumps(PACKAGES, indent=1) + "\n")
        shutil.rmtree(assets, ignore_errors=True)
        staging.rename(assets)
    return assets


def _extract(spec: str, tarball: Path, paths: list[str], into: Path) -> None:
    """Extract `paths` (files, or folders ending without a suffix) of an npm tarball, after
    checking the tarball against its pinned integrity."""
    if (found := _integrity(tarball)) != PACKAGES[spec]:
        raise AssetError(
            f"{spec}: the npm registry's tarball has integrity {found}, but "
            f"{PACKAGES[spec]} is pinned: refusing it"
        )
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            inner = member.name.removeprefix("package/")
            if member.isfile() and any(inner == p or inner.startswith(p + "/") for p in paths):
                member.name = inner
                archive.extract(member, into, filter="data")
    missing = [p for p in paths if not (into / p).exists()]
    if missing:
        raise AssetError(f"{spec} has no {', '.join(missing)}: the pins in data_docs.py are wrong")


# --- rewriting the site -------------------------------------------------------------------


def make_offline(site: Path, assets: Path | None = None) -> bool:
    """Copy the assets into the Data Docs `site` and point every page and GX's stylesheet at
    local files. Returns False (pages untouched, a warning logged) when the assets are not
    there; pages already rewritten are left alone, so this is cheap after every build."""
    assets = assets or data_docs_assets()
    if not fetched(assets):
        log.warning(
            "Data Docs at %s load their styles and scripts from CDNs: no pinned copies "
            "in %s (run `make setup`, or `python -m sprx_pipeline.data_docs fetch`, "
            "to fetch them from the npm registry); summary.html needs no network",
            site,
            assets,
        )
        return False
    _copy_assets(assets, site / VENDOR)
    for page in site.rglob("*.html"):
        text = page.read_text()
        if "https://" in text:
            rewritten = _rewrite(text, page.parent, site)
            if rewritten != text:
                page.write_text(rewritten)
    for sheet in (site / "static" / "styles").glob("*.css"):
        text = sheet.read_text()
        rewritten = _GX_IMAGE.sub(lambda m, folder=sheet.parent: _gx_image(m, folder, site), text)
        if rewritten != text:
            sheet.write_text(rewritten)
    return True


def _copy_assets(assets: Path, vendor: Path) -> None:
    """Mirror `assets` into the site's vendor folder (a file at a time, only when it
    differs, so a site that already has them costs a directory walk)."""
    for source in assets.rglob("*"):
        target = vendor / source.relative_to(assets)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.is_file() or target.stat().st_size != source.stat().st_size:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _rewrite(text: str, folder: Path, site: Path) -> str:
    """Point each <script>/<link> tag that loads a known CDN file at the local copy."""

    def tag(match: re.Match) -> str:
        whole = match.group(0)
        address = _ADDRESS.search(whole)
        if address is None or address.group(2) not in CDN_FILES:
            return whole
        local = site / VENDOR / CDN_FILES[address.group(2)]
        if (sri := _INTEGRITY.search(whole)) and _integrity(local, sri.group(1)) != (
            f"{sri.group(1)}-{sri.group(2)}"
        ):
            log.warning(
                "%s differs from the file GX pins by hash (%s): left on the CDN",
                local,
                address.group(2),
            )
            return whole
        relative = os.path.relpath(local, folder)
        whole = whole.replace(address.group(0), f'{address.group(1)}="{relative}"')
        return _CHECK_ATTRIBUTES.sub("", whole)

    text = _TAG.sub(tag, text)
    return _GX_IMAGE.sub(lambda m: _gx_image(m, folder, site), text)


def _gx_image(match: re.Match, folder: Path, site: Path) -> str:
    """GX's logo from S3 -> the copy GX ships in static/images (the same picture); an image
    GX does not ship (its dark-theme logo) -> the light one."""
    images = site / "static" / "images"
    local = images / match.group(1)
    if not local.is_file():
        local = images / "logo-long.png"
    return os.path.relpath(local, folder)


def main(argv: list[str]) -> int:
    """`python -m sprx_pipeline.data_docs fetch [DIR]`: fetch the pinned assets."""
    if not argv or argv[0] != "fetch":
        print("usage: python -m sprx_pipeline.data_docs fetch [DIR]", file=sys.stderr)
        return 2
    target = Path(argv[1]) if len(argv) > 1 else None
    try:
        where = fetch(target)
    except AssetError as exc:
        print(f"data docs assets: {exc}", file=sys.stderr)
        return 1
    print(f"Data Docs assets (npm, pinned): {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
