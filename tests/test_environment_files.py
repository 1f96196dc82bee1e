"""pyproject.toml and environment.yml must list the same packages with the same versions.

pyproject: [project] dependencies plus every extra (``lab``, ``teach``, ``dev``; ``dev`` names the other two as
``ptft-helpers[lab,teach]``, which is the project itself, not a package). environment.yml: the conda dependencies
(``pytorch`` is pip's ``torch``) and the entries under ``pip:`` (``-e .`` is the project itself);
``python`` and ``pip`` are not packages of the project. environment.yml is read with PyYAML, which
is installed with JupyterLab (jupyterlab -> jupyter_server -> jupyter_events -> pyyaml).
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    """'torch>=2.3' -> ('torch', '>=2.3'); names normalised as pip does (PEP 503)."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?", requirement)
    if not match:
        raise ValueError(f"Cannot read the requirement {requirement!r}")
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return name, match.group(2).replace(" ", "")


def pyproject_packages(text: str) -> dict[str, str]:
    project = tomllib.loads(text)["project"]
    extras = project.get("optional-dependencies", {}).values()
    requirements = project.get("dependencies", []) + [r for extra in extras for r in extra]
    own = re.sub(r"[-_.]+", "-", project["name"]).lower()
    return {name: spec for name, spec in map(_split, requirements) if name != own}


def environment_packages(text: str) -> dict[str, str]:
    packages = {}
    for entry in yaml.safe_load(text)["dependencies"]:
        if isinstance(entry, dict):  # the pip: section
            for requirement in entry.get("pip", []):
                if requirement.strip().startswith("-e"):
                    continue
                name, spec = _split(requirement)
                packages[name] = spec
            continue
        # conda: "name>=1.0", "name=1.0" or "name 1.0"; channel prefixes ("conda-forge::name") dropped.
        name, spec = _split(str(entry).split("::")[-1].replace(" ", ""))
        name = CONDA_TO_PIP.get(name, name)
        if name not in NOT_PACKAGES:
            packages[name] = spec
    return packages


def compare(pyproject_text: str, environment_text: str) -> list[str]:
    """Every difference between the two files, as sentences (empty when they agree)."""
    pip, conda = pyproject_packages(pyproject_text), environment_packages(environment_text)
    problems = []
    if missing := sorted(set(pip) - set(conda)):
        problems.append(f"in pyproject.toml but missing from environment.yml: {', '.join(missing)}")
    if missing := sorted(set(conda) - set(pip)):
        problems.append(f"in environment.yml but missing from pyproject.toml: {', '.join(missing)}")
    for name in sorted(set(pip) & set(conda)):
        if pip[name] != conda[name]:
            problems.append(
                f"{name}: {pip[name] or 'any version'} in pyproject.toml, "
                f"{conda[name] or 'any version'} in environment.yml"
            )
    return problems


def test_pyproject_and_environment_yml_agree():
    problems = compare((ROOT / "pyproject.toml").read_text(), (ROOT / "environment.yml").read_text())
    assert not problems, "pyproject.toml and environment.yml disagree:\n  " + "\n  ".join(problems)


def test_both_lists_are_read():
    pip = pyproject_packages((ROOT / "pyproject.toml").read_text())
    conda = environment_packages((ROOT / "environment.yml").read_text())
    assert {"torch", "torchvision", "pytest"} <= set(pip)
    assert {"torch", "torchvision", "pytest"} <= set(conda)
    assert "pytorch" not in conda and "python" not in conda and "." not in conda


PYPROJECT = """
[project]
name = "x"
dependencies = ["torch>=2.3", "tqdm>=4.60"]
[project.optional-dependencies]
lab = ["Jupyter_Lab >= 4.0"]
dev = ["x[lab]", "pytest>=7.4", "playwright>=1.40"]
"""

ENVIRONMENT = """
name: x
dependencies:
  - python>=3.10
  - pytorch>=2.3
  - conda-forge::jupyter-lab>=4.0
  - pytest>=7.4
  - pip
  - pip:
      - playwright>=1.40
      - -e .
"""


def test_a_package_missing_on_one_side_is_named():
    assert compare(PYPROJECT, ENVIRONMENT + "      - tqdm>=4.60\n") == []
    assert compare(PYPROJECT, ENVIRONMENT) == ["in pyproject.toml but missing from environment.yml: tqdm"]
    extra = ENVIRONMENT.replace("  - pip\n", "  - nbval>=0.11\n  - pip\n") + "      - tqdm>=4.60\n"
    assert compare(PYPROJECT, extra) == ["in environment.yml but missing from pyproject.toml: nbval"]


@pytest.mark.parametrize(
    "line,problem",
    [
        ("  - pytorch>=2.3\n", None),
        ("  - pytorch>=2.4\n", "torch: >=2.3 in pyproject.toml, >=2.4 in environment.yml"),
        ("  - pytorch\n", "torch: >=2.3 in pyproject.toml, any version in environment.yml"),
    ],
)
def test_a_version_that_differs_is_named(line, problem):
    text = ENVIRONMENT.replace("  - pytorch>=2.3\n", line) + "      - tqdm>=4.60\n"
    assert compare(PYPROJECT, text) == ([problem] if problem else [])
