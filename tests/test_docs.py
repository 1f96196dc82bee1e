"""The README and the guides, as a newcomer meets them: the README's first screen says what this is, what you need,
the two commands, the no-install route, where to start and where the teacher's guide is; the README stays short; and
every relative link in the README, the guides (``docs/``) and the notebooks' Markdown leads to a file that exists,
and to a heading of it where the link names one."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
SCREEN_LINES = 30  # a first screen: what a reader sees before scrolling


def first_screen() -> str:
    """The README up to its first section heading."""
    text = README.read_text(encoding="utf-8")
    return text[: text.index("\n## ")]


def test_the_readme_is_short():
    assert README.stat().st_size < 12_000, f"README.md is {README.stat().st_size:,} bytes: move details to docs/"


def test_the_first_screen_fits_a_screen():
    assert len(first_screen().splitlines()) <= SCREEN_LINES


@pytest.mark.parametrize(
    "item",
    [
        "Python 3.11 or newer",  # what you need
        "`make`",
        "Linux",  # which operating systems
        "make lab",  # the two commands
        "make test",
        "colab.research.google.com",  # the no-install route
        "](notebooks/00_setup_and_data.ipynb) first",  # where to start
        "](docs/teaching.md)",  # the teacher's guide
    ],
)
def test_the_first_screen_says(item):
    assert item in first_screen()


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MyST make it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}


def markdown(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(markdown(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=lambda p: p.name)
def test_every_relative_link_leads_somewhere(page):
    for link in relative_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link} leads to no file"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: {link}: {path.name} has no such heading"


def test_environment_yml_is_what_a_learner_needs():
    """Binder and conda install the package with its notebook extra through pip: no second list of packages."""
    text = (REPO_ROOT / "environment.yml").read_text()
    lines = [x.strip() for x in text.splitlines() if x.strip() and not x.strip().startswith("#")]
    dependencies = lines[lines.index("dependencies:") + 1 :]
    assert dependencies == ["- python=3.11", "- pip", "- pip:", "- -e .[lab]"]
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11"
    assert {re.match(r"[\w-]+", d)[0] for d in project["optional-dependencies"]["lab"]} == {"jupyterlab", "nbval"}


def test_the_guides_misconceptions_name_headings_that_exist():
    """The teacher's guide names each cell by its notebook's heading: every *italic* name there is one."""
    guide = (REPO_ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    section = guide[guide.index("## Common misconceptions") : guide.index("## Graded exercises")]
    headings = " | ".join(line for nb in NOTEBOOKS for line in markdown(nb).splitlines() if line.startswith("#"))
    names = [" ".join(m.split()) for m in re.findall(r"(?<!\*)\*([^*\"]+)\*(?!\*)", section)]
    assert names
    missing = [name for name in names if name not in " ".join(headings.split())]
    assert not missing, f"docs/teaching.md names headings that no notebook has: {missing}"


def test_the_guide_counts_the_encoders_make_checkpoints_trains(monkeypatch):
    from ptft_helpers.pretrained import series_encoders

    monkeypatch.setenv("PTFT_FAST", "0")  # `make checkpoints` pretrains the full-mode encoders
    guide = (REPO_ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
    (count,) = re.findall(r"^make checkpoints +# (\d+) encoders$", guide, re.MULTILINE)
    assert int(count) == len(series_encoders())
