"""The website (``make book``, Jupyter Book 2) opened in Debian's Chromium through Playwright.

Builds the static site into ``_build/html`` as ``make book`` does, serves it on a free local port and
checks that every page of the table of contents is there and reachable through the site's own
links from the start page, that each notebook page shows all of its stored figures (loaded, not
broken) and its math rendered by KaTeX, and that no internal link answers with an error.

The site uses the theme in ``site-template/`` (myst.yml), which ships with the repository, so the
build needs no internet.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
SITE = REPO_ROOT / "_build" / "html"
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))
MATH = re.compile(r"\$[^$\n]+\$|\$\$")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"),
    pytest.mark.skipif(not JUPYTER_BOOK.exists(), reason="jupyter-book is not installed (pip install -e '.[dev]')"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def site():
    """Build the site; serve it; yield (base URL, the pages of the table of contents as URL paths)."""
    result = subprocess.run(
        [str(JUPYTER_BOOK), "build", "--html", "--ci"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 or not (SITE / "index.html").is_file():
        pytest.fail(f"jupyter-book build --html failed:\n{output[-4000:]}")
    config = json.loads((REPO_ROOT / "_build" / "site" / "config.json").read_text())
    project = config["projects"][0]
    pages = ["/"] + [f"/{page['slug'].replace('.', '/')}" for page in project["pages"] if "slug" in page]
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(site):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def normalise(path: str) -> str:
    path = urllib.parse.urlsplit(path).path
    for suffix in ("index.html", ".html"):
        path = path.removesuffix(suffix)
    return path.rstrip("/") or "/"


def test_every_page_is_there(site):
    base, pages = site
    notebook_pages = [
        p for p in pages if any(p.endswith(nb.stem.split("_", 1)[1].replace("_", "-")) for nb in NOTEBOOKS)
    ]
    assert len(notebook_pages) == len(NOTEBOOKS), (pages, [nb.name for nb in NOTEBOOKS])
    for guide in sorted((REPO_ROOT / "docs").glob("*.md")):  # the guides and the results page
        assert any(p.endswith(guide.stem) for p in pages), (guide.name, pages)
    for page in pages:
        assert status(base + page) == 200, page


def test_navigation_reaches_every_page_and_no_internal_link_is_broken(site, browser, artifacts_dir):
    base, pages = site
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    expected = set(map(normalise, pages))
    seen, queue, links = set(), ["/"], set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        for href in hrefs:
            if href.startswith(base):
                links.add(href.split("#")[0])
                target = normalise(href[len(base) :])
                if target not in seen and target in expected:  # files (figures, LICENSE) are only fetched
                    queue.append(target)
    page.screenshot(path=str(artifacts_dir / "book_last_page.png"))
    page.close()
    missing = sorted(expected - seen)
    assert not missing, f"not reachable through the site's links from the start page: {missing}"
    broken = sorted(link for link in links if status(link) != 200)
    assert not broken, f"internal links that do not answer 200: {broken}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_page_shows_its_figures_and_math(site, browser, artifacts_dir, notebook):
    base, pages = site
    nb = json.loads(notebook.read_text())
    figures = sum("image/png" in out.get("data", {}) for cell in nb["cells"] for out in cell.get("outputs", []))
    has_math = any(MATH.search("".join(c["source"])) for c in nb["cells"] if c["cell_type"] == "markdown")
    slug = notebook.stem.split("_", 1)[1].replace("_", "-")
    path = next(p for p in pages if p.endswith(slug))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(base + path)
        page.wait_for_load_state("networkidle")
        page.evaluate("async () => { for (const img of document.images) { img.loading = 'eager'; } }")
        page.wait_for_function("() => Array.from(document.images).every(img => img.complete)", timeout=30_000)
        loaded = page.eval_on_selector_all("article img, main img", "els => els.filter(e => e.naturalWidth > 0).length")
        assert loaded >= figures, f"{notebook.name}: {loaded} figures shown, the notebook has {figures}"
        if has_math:
            assert page.locator(".katex").count() > 0, f"{notebook.name}: no rendered math"
            assert page.locator(".katex-error").count() == 0, f"{notebook.name}: math that KaTeX could not render"
    finally:
        page.screenshot(path=str(artifacts_dir / f"book_{notebook.stem}.png"), full_page=False)
        page.close()
