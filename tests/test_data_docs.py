"""The Great Expectations Data Docs open in a browser with no network.

GX's pages load their styles and scripts from CDNs; `sprx_pipeline.data_docs` rewrites them
to pinned copies from the npm registry inside the Data Docs folder. Here the Data Docs of
the tiny extract's two gates are opened in Debian's headless Chromium with every host name
unresolvable and a dead proxy, through file://, and a probe script reports what rendered;
screenshots are saved to data/test-output/ for review.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import great_expectations
import pytest

from sprx_pipeline import data_docs
from sprx_pipeline.config import PROJECT_ROOT, data_docs_assets
from sprx_pipeline.quality import DATA_DOCS

pytestmark = pytest.mark.slow  # the published tiny extract (one real dbt build per session)

PROBE = (Path(__file__).with_name("data_docs_probe.js")).read_text()
OUTPUT = PROJECT_ROOT / "data" / "test-output"
GX_TEMPLATES = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
# A resource fetched from elsewhere: a script, stylesheet or image by absolute URL, or a CSS url().
EXTERNAL = re.compile(
    r'<(?:script|link|img)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"[^>]*>'
    r"|url\(\s*['\"]?(?:https?:)?//[^)]*\)",
    re.IGNORECASE,
)
OFFLINE = [
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
    "--proxy-server=127.0.0.1:9",
]


@pytest.fixture
def site(tiny, tmp_path) -> Path:
    """A copy of the tiny extract's Data Docs (the probes are written beside its pages)."""
    source = (tiny.paths.quality_dir / DATA_DOCS).parent
    if not data_docs.fetched(data_docs_assets()):
        pytest.fail(
            "the Data Docs assets are missing: run `make setup` (it fetches them "
            "from the npm registry)"
        )
    return Path(shutil.copytree(source, tmp_path / "local_site"))


def validation_page(site: Path, suite: str) -> Path:
    (page,) = (site / "validations" / Path(*suite.split("."))).rglob("*.html")
    return page


def chromium(*args: str, profile: Path) -> str:
    """Run headless Chromium offline; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run `make setup` (it installs Debian's chromium)")
    flags = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *OFFLINE,
        "--hide-scrollbars",
        "--window-size=1400,1600",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run(
        [*flags, *args], capture_output=True, text=True, timeout=120, check=True
    ).stdout


def probe(page: Path, tmp_path: Path, text: str | None = None) -> dict:
    """What rendered of `page` (or of `text` in its place), reported by data_docs_probe.js."""
    copy = page.with_name(f"probe-{page.name}")
    copy.write_text(
        (text or page.read_text()).replace("<head>", f"<head><script>{PROBE}</script>", 1)
    )
    dom = chromium("--dump-dom", copy.as_uri(), profile=tmp_path / f"profile-{page.stem}")
    found = re.search(r'<pre id="sprx-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe never reported on {page}:\n{dom[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&"))


def screenshot(page: Path, name: str, tmp_path: Path) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / name
    chromium(f"--screenshot={target}", page.as_uri(), profile=tmp_path / f"shot-{page.stem}")
    return target


def test_no_page_or_stylesheet_loads_anything_from_the_network(site):
    files = [*site.rglob("*.html"), *(site / "static" / "styles").glob("*.css")]
    assert len(files) >= 25  # index, 12 suites, 12 validations (2 gates of the tiny extract)
    external = {str(f.relative_to(site)): EXTERNAL.findall(f.read_text()) for f in files}
    assert {f: found for f, found in external.items() if found} == {}
    assert (site / data_docs.VENDOR / "jquery@3.7.1" / "dist" / "jquery.min.js").is_file()


def test_every_cdn_file_in_gx_templates_has_its_pinned_copy_with_gx_hash():
    templates = "\n".join(t.read_text() for t in GX_TEMPLATES.glob("*.j2"))
    loaded = set(re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="(https://[^"{]+)"', templates))
    assert loaded and loaded <= set(data_docs.CDN_FILES)  # a GX upgrade adding a CDN fails here
    # GX pins two of them by Subresource Integrity: our copies are byte for byte those files.
    pinned = dict(re.findall(r'src="(https://[^"]+)" integrity="([^"]+)"', templates))
    assert len(pinned) == 2
    assets = data_docs_assets()
    for url, integrity in pinned.items():
        algorithm = integrity.split("-")[0]
        assert data_docs._integrity(assets / data_docs.CDN_FILES[url], algorithm) == integrity


def test_index_and_a_validation_page_render_their_tables_styled_with_no_network(
    site, tmp_path, capsys
):
    index = probe(site / "index.html", tmp_path)
    assert index["failed"] == []
    assert (index["jquery"], index["bootstrap_table"], index["vega"]) == ("3.7.1", True, "5.33.1")
    # Two tables drawn by bootstrap-table from the page's data (validation results and
    # suites, 12 of each), 10 rows a page; Bootstrap's .table-sm gives each cell 0.3rem.
    assert (index["wrapped"], index["rows"]) == (2, 20)
    assert (index["cell_padding"], index["cell_border"]) == ("4.8px", "1px solid")
    assert index["font_awesome"] is True
    page = validation_page(site, "marts.sp_patient_outcomes")
    checks = len(
        json.loads((PROJECT_ROOT / "expectations" / "marts.sp_patient_outcomes.json").read_text())[
            "expectations"
        ]
    )
    validation = probe(page, tmp_path)
    assert validation["failed"] == []
    assert validation["status_icons"] == checks == 14  # one row per check, with its status
    assert (validation["cell_padding"], validation["cell_border"]) == ("4.8px", "1px solid")
    assert validation["font_awesome"] is True
    shots = [
        screenshot(site / "index.html", "data-docs-index.png", tmp_path),
        screenshot(page, "data-docs-validation.png", tmp_path),
    ]
    assert all(shot.stat().st_size > 30_000 for shot in shots)
    with capsys.disabled():
        print(f"\nData Docs screenshots (offline) for review: {', '.join(map(str, shots))}")


def test_the_same_page_with_its_cdn_links_renders_nothing_offline(site, tmp_path):
    # GX's page as it was, under the same blocked network: what a data manager saw before.
    page = site / "index.html"
    text = page.read_text()
    for url, local in data_docs.CDN_FILES.items():
        text = text.replace(
            f'"{os.path.relpath(site / data_docs.VENDOR / local, site)}"', f'"{url}"'
        )
    assert text.count("https://unpkg.com/") == 4
    index = probe(page, tmp_path, text)
    assert len(index["failed"]) >= 15 and index["jquery"] is None
    assert (index["wrapped"], index["rows"], index["cell_padding"]) == (0, 0, None)
