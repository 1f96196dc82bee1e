"""A class server seen from outside, as browsers see it: log users in over HTTP, run a notebook in a user's own
kernel through the hub's proxy, and read what each user's processes use. ``tests/test_classroom.py`` and
``benchmarks/bench_classroom.py`` use it against a hub that ``classroom/server.py`` set up and started.

It needs ``requests`` and ``tornado`` (both come with JupyterLab and JupyterHub).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import threading
import time
import uuid

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class Hub:
    """A running hub at ``url``: a logged-in HTTP session and an API token per user, and how long each user's
    server took to become ready after the login form was sent."""

    def __init__(self, url: str, passwords: dict[str, str]):
        self.url, self.passwords = url, passwords
        self.sessions: dict[str, requests.Session] = {}
        self.tokens: dict[str, str] = {}
        self.spawn_seconds: dict[str, float] = {}

    def log_in(self, user: str) -> requests.Session:
        """The login form, as a browser sends it (with its XSRF cookie), then the spawn it redirects to."""
        s = requests.Session()
        s.get(f"{self.url}/hub/login", timeout=30).raise_for_status()
        start = time.perf_counter()
        r = s.post(
            f"{self.url}/hub/login?next=/hub/spawn",
            timeout=120,
            allow_redirects=True,
            data={"username": user, "password": self.passwords[user], "_xsrf": s.cookies.get("_xsrf", path="/hub/")},
        )
        r.raise_for_status()
        # The hub's cookie: a server that is already running sets one of the same name for its own path.
        headers = {"X-XSRFToken": s.cookies.get("_xsrf", path="/hub/")}
        made = s.post(f"{self.url}/hub/api/users/{user}/tokens", json={"note": "client"}, headers=headers, timeout=30)
        made.raise_for_status()
        self.tokens[user] = made.json()["token"]
        self.wait_until_ready(user)
        self.spawn_seconds[user] = time.perf_counter() - start
        self.sessions[user] = s
        return s

    def wait_until_ready(self, user: str) -> None:
        """Wait until ``user``'s server is ready, as the hub sees it (a RuntimeError after 2 minutes)."""
        for _ in range(1200):
            model = self.api("GET", f"users/{user}", user=user).json()
            if model["servers"].get("", {}).get("ready"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{user}'s server did not become ready within 2 minutes")

    def api(self, method: str, path: str, user: str, **kwargs) -> requests.Response:
        """A request to the hub's REST API with ``user``'s token."""
        return requests.request(
            method,
            f"{self.url}/hub/api/{path}",
            timeout=30,
            headers={"Authorization": f"token {self.tokens[user]}"},
            **kwargs,
        )

    def server(self, owner: str, path: str, token_of: str | None = None, **kwargs) -> requests.Response:
        """A GET to ``owner``'s single-user server, with ``token_of``'s token (default: the owner's); redirects are
        not followed unless ``allow_redirects=True``."""
        token = self.tokens[token_of or owner]
        kwargs.setdefault("allow_redirects", False)
        return requests.get(
            f"{self.url}/user/{owner}/{path}", headers={"Authorization": f"token {token}"}, timeout=30, **kwargs
        )

    def post(self, owner: str, path: str, **kwargs) -> requests.Response:
        """A POST to ``owner``'s single-user server with the owner's token (the formgrader's and the Assignments
        tab's actions)."""
        token = self.tokens[owner]
        url = f"{self.url}/user/{owner}/{path}"
        return requests.post(url, headers={"Authorization": f"token {token}"}, timeout=300, **kwargs)


async def run_notebook(hub: Hub, user: str, path: str, fast: bool = True, timeout: float = 1200) -> list[str]:
    """Every code cell of ``path`` (relative to the user's home) in a new kernel on the user's own server, through
    the hub's proxy, as *Run All* would; ``fast`` first sets ``PTFT_FAST=1`` in the kernel. Returns the errors
    (none when the notebook ran through)."""
    notebook = hub.server(user, f"api/contents/{path}").json()
    mode = f'import os\nos.environ["PTFT_FAST"] = "{int(fast)}"  # the mode the class runs'
    cells = [mode, *("".join(c["source"]) for c in notebook["content"]["cells"] if c["cell_type"] == "code")]
    return (await run_cells(hub, user, cells, timeout))[1]


async def run_cells(hub: Hub, user: str, cells: list[str], timeout: float = 1200) -> tuple[str, list[str]]:
    """Run ``cells`` one after another in a new kernel on the user's own server, through the hub's proxy, until
    one fails; returns what they printed and the errors."""
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    base = f"{hub.url}/user/{user}"
    kernel = requests.post(f"{base}/api/kernels", json={"name": "python3"}, headers=headers, timeout=60).json()
    url = f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel['id']}/channels"
    ws = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=timeout))
    session, printed, errors = uuid.uuid4().hex, [], []
    try:
        for code in cells:
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps(_execute_request(code, msg_id, user, session)))
            while True:
                message = await ws.read_message()
                if message is None:
                    errors.append("the connection to the kernel closed")
                    break
                reply = json.loads(message)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if reply["msg_type"] == "stream":
                    printed.append(reply["content"]["text"])
                if reply["msg_type"] == "error":
                    errors.append(f"{reply['content']['ename']}: {reply['content']['evalue']}")
                if reply["msg_type"] == "execute_reply":
                    break
            if errors:
                break
    finally:
        ws.close()
        requests.delete(f"{base}/api/kernels/{kernel['id']}", headers=headers, timeout=60)
    return "".join(printed), errors


def _execute_request(code: str, msg_id: str, user: str, session: str) -> dict:
    header = {
        "msg_id": msg_id,
        "username": user,
        "session": session,
        "msg_type": "execute_request",
        "version": "5.3",
        "date": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    return {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "content": content}


async def run_in_terminal(hub: Hub, user: str, command: str, until: str, timeout: float = 60) -> str:
    """Type ``command`` into a new JupyterLab terminal on the user's own server (the shell that the terminal
    starts, as the user gets it) and return what it shows until ``until`` (which the command should print without
    typing it: the terminal shows what is typed) appears, the shell ends, or ``timeout`` seconds pass."""
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    base = f"{hub.url}/user/{user}"
    name = requests.post(f"{base}/api/terminals", headers=headers, timeout=60).json()["name"]
    url = f"{base.replace('http', 'ws', 1)}/terminals/websocket/{name}"
    ws = await websocket_connect(HTTPRequest(url, headers=headers, request_timeout=timeout))
    shown = ""
    try:
        ws.write_message(json.dumps(["stdin", command + "\r"]))
        deadline = time.monotonic() + timeout
        while until not in shown:
            try:
                message = await asyncio.wait_for(ws.read_message(), max(deadline - time.monotonic(), 0))
            except TimeoutError:
                break
            if message is None:  # the shell ended
                break
            kind, *data = json.loads(message)
            shown += data[0] if kind == "stdout" else ""
    finally:
        ws.close()
        requests.delete(f"{base}/api/terminals/{name}", headers=headers, timeout=60)
    return shown


def memory_mb(user: str) -> int:
    """Resident memory (MB) of all of ``user``'s processes together."""
    rss = subprocess.run(["ps", "-o", "rss=", "-u", user], capture_output=True, text=True).stdout.split()
    return sum(int(kb) for kb in rss) // 1024


def cpu_seconds(user: str) -> float:
    """CPU seconds used so far by ``user``'s running processes together."""
    times = subprocess.run(["ps", "-o", "cputimes=", "-u", user], capture_output=True, text=True).stdout.split()
    return sum(float(t) for t in times)


class Usage:
    """Memory and CPU of ``users``' processes while a block runs, sampled every ``every`` seconds in a thread (the
    kernels end with their notebooks, so their CPU time is read while they run): ``idle_mb`` before, ``peak_mb``
    and ``cpu_seconds`` (used during the block) per user, and the block's ``wall_seconds``.

        with Usage(["ann", "bob"]) as usage:
            ...  # run the notebooks
    """

    def __init__(self, users: list[str], every: float = 0.25):
        self.users, self.every = list(users), every
        self._stop = threading.Event()

    def __enter__(self) -> Usage:
        self.idle_mb = {u: memory_mb(u) for u in self.users}
        self.peak_mb = dict(self.idle_mb)
        self._before = {u: cpu_seconds(u) for u in self.users}
        self._latest = dict(self._before)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            for user in self.users:
                self.peak_mb[user] = max(self.peak_mb[user], memory_mb(user))
                self._latest[user] = max(self._latest[user], cpu_seconds(user))

    def __exit__(self, *exc) -> None:
        self.wall_seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        self.cpu_seconds = {u: self._latest[u] - self._before[u] for u in self.users}
