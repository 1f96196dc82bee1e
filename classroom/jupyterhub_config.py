"""JupyterHub configuration for a class on one machine (``classroom/server.py setup`` copies it into
``<prefix>/hub/`` beside ``settings.json``, which holds this class's values).

PAM logs users in with their Unix passwords; each user's server runs as that user (LocalProcessSpawner), from the
shared environment, with one PyTorch thread and the shared, read-only data, under the limits that setup computed
(``limits``), and first in line for the kernel's out-of-memory killer. Nobody is a hub admin unless setup was told
(``--instructor-admin``). The idle culler stops servers that have been idle for ``cull_after`` seconds.
"""

import json
import resource
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner

c = get_config()  # noqa: F821 (JupyterHub provides it)
here = Path(__file__).resolve().parent
settings = json.loads((here / "settings.json").read_text())
prefix = Path(settings["prefix"])
venv_bin = prefix / "venv" / "bin"

c.JupyterHub.ip = settings["ip"]
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"  # the hub's own API: this machine only, on a port of this class's own
c.JupyterHub.hub_port = settings["hub_port"]
c.JupyterHub.db_url = f"sqlite:///{here / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(here / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.command = [str(prefix / "node" / "node_modules" / ".bin" / "configurable-http-proxy")]
# The proxy's API on a port of this class's own: at the default (8001) another class's proxy may be listening.
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.pid_file = str(here / "proxy.pid")

c.JupyterHub.authenticator_class = "pam"
c.Authenticator.allowed_users = set(settings["users"])
SERVER_OOM_SCORE = 500  # the hub and its proxy have -900 (server.py start)


def limit_this_process(limits: dict) -> None:
    """The class's limits on this process and all it starts (as root: its user cannot raise them again)."""
    resource.setrlimit(resource.RLIMIT_DATA, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))  # counted per user
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"]))
    with open("/proc/self/oom_score_adj", "w") as f:  # by root with CAP_SYS_RESOURCE: its user cannot lower it
        f.write(str(SERVER_OOM_SCORE))


class LimitedSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose servers start under ``limit_this_process``, before they become their user."""

    def make_preexec_fn(self, name):
        become_user = super().make_preexec_fn(name)

        def preexec():
            limit_this_process(settings["limits"])
            become_user()

        return preexec


c.JupyterHub.spawner_class = LimitedSpawner
c.Spawner.cmd = [str(venv_bin / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.environment = {
    "PATH": f"{venv_bin}:/usr/bin:/bin",  # nbgrader runs alembic from PATH: the environment's bin/ comes first
    "OMP_NUM_THREADS": "1",  # many kernels on few cores: one thread each (docs/classroom.md measures why)
    "PTFT_DATA": str(prefix / "data"),
    "PTFT_PROGRESS": "0",
}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={settings['cull_after']}"],
    }
]
c.JupyterHub.load_roles = [
    # Admins (who may open every student's server) only if setup was told: with this list, the hub makes its
    # admins exactly these at every start.
    {"name": "admin", "users": settings["admins"]},
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    },
]
