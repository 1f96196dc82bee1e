"""``make lab`` as root (containers, classroom servers) reaches JupyterLab's /lab, with the shipped settings.

Starts the README's command itself, ``make lab``, on a free port with a token and a temporary Jupyter
home, and checks that it says in one line that it passes ``--allow-root``, that ``/lab`` answers, and
that the settings in ``lab-settings/overrides.json`` (no news, no update checks) are what JupyterLab
serves. The set-up step (``.venv``) is not redone here: ``make test`` has just done it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from server_logs import server_log

REPO_ROOT = Path(__file__).resolve().parent.parent  # the clone the tests run in


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

NOTIFICATION = "@jupyterlab/apputils-extension:notification"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks `make lab` as root; this run is not root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()


@pytest.fixture(scope="module")
def make_lab(tmp_path_factory):
    """``make lab`` running as root; yields (base URL, token, the process, its output file)."""
    tmp_path = tmp_path_factory.mktemp("make_lab")
    home = tmp_path / "jupyter"
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PORT": str(port),
        "LAB_ARGS": f"--no-browser --ip=127.0.0.1 --ServerApp.port_retries=0 --IdentityProvider.token={token}",
    }
    log = tmp_path / "make_lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "lab"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        with server_log("make lab", log):
            yield base, token, proc, log
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the group we started: make, JupyterLab
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def wait_for_lab(base: str, token: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make lab exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status, page = get(f"{base}/lab", token)
            if status == 200:
                return page
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"make lab did not serve /lab within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_make_lab_as_root_reaches_lab_without_news(make_lab):
    base, token, proc, log = make_lab
    page = wait_for_lab(base, token, proc, log)
    assert "JupyterLab" in page
    said = [line for line in log.read_text().splitlines() if "--allow-root" in line and "root" in line.lower()]
    assert said and said[0].startswith("make lab:"), log.read_text()[-2000:]
    status, body = get(f"{base}/lab/api/settings/{NOTIFICATION}", token)
    # Overrides become the schema's defaults, which JupyterLab uses where the user has set nothing.
    defaults = {k: v.get("default") for k, v in json.loads(body)["schema"]["properties"].items()}
    assert (status, defaults["fetchNews"], defaults["checkForUpdates"]) == (200, "false", False), defaults


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_no_news_pop_up_in_the_browser(make_lab, tmp_path, artifacts_dir):
    """Without lab-settings/, JupyterLab 4 asks "Would you like to get notified about official Jupyter news?"."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    base, token, proc, log = make_lab
    wait_for_lab(base, token, proc, log)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        try:
            page.goto(f"{base}/lab?token={token}")
            page.wait_for_selector(".jp-LauncherCard", timeout=60_000)
            page.wait_for_timeout(6_000)  # the news question comes a moment after the launcher
            page.screenshot(path=str(artifacts_dir / "make_lab.png"))
            toasts = page.locator(".Toastify__toast")
            assert toasts.count() == 0, [toasts.nth(i).text_content() for i in range(toasts.count())]
        finally:
            browser.close()
