"""JupyterHub for one course of hundreds of students, with nbgrader's exchange (see deploy/README.md).

Every setting is an environment variable, read here and documented (with its default) in deploy/rnnkit.env, which
the hub's systemd unit (deploy/jupyterhub.service) loads: edit that file, never this one.

Students and instructors get single-user servers (systemd units with memory/CPU quotas, or plain processes where
there is no systemd); the course's formgrader runs as a hub service owned by the grader account, whose home holds
the repository (the course root: solutions/, exercises/, nbgrader_config.py). Grading itself (`make autograde`)
runs as root in bubblewrap sandboxes, never inside a student's or the formgrader's server. Everything the hub starts
(single-user servers, the formgrader, the idle culler) runs from the hub's own environment (``sys.prefix``), so one
`pip install` provides jupyterhub-singleuser, nbgrader and the culler to all of them.
"""
import os
import sys

c = get_config()  # noqa: F821

COURSE = os.environ.get("COURSE_ID", "rnnkit")
GRADER = os.environ.get("COURSE_GRADER", f"grader-{COURSE}")
COURSE_ROOT = os.environ.get("COURSE_ROOT", f"/home/{GRADER}/course")
BIN = os.path.join(sys.prefix, "bin")

# --- who may log in. PAM (the machine's Unix accounts and passwords) works out of the box for a test class; for
# the institution's login set HUB_AUTHENTICATOR=oauthenticator.generic.GenericOAuthenticator and the OAUTH* variables
# (deploy/rnnkit.env; oauthenticator reads them itself, but for the user-name claim).
c.JupyterHub.authenticator_class = os.environ.get("HUB_AUTHENTICATOR", "pam")
c.GenericOAuthenticator.username_claim = os.environ.get("OAUTH2_USERNAME_CLAIM", "preferred_username")
instructors = sorted(set(os.environ.get("HUB_ADMINS", "instructor1").split()))
students_file = os.environ.get("COURSE_STUDENTS", "/srv/nbgrader/students.txt")
students = sorted(set(open(students_file).read().split())) if os.path.exists(students_file) else []
c.Authenticator.admin_users = set(instructors)
# JupyterHub 5 lets no one in by default. The grader account is a hub user too (it has no password, so it never
# logs in): the formgrader runs as it and asks the hub for its own courses.
c.Authenticator.allowed_users = set(instructors) | set(students) | {GRADER}
# nbgrader reads groups: `formgrade-<course>` may open the formgrader, `nbgrader-<course>` sees the course's
# assignments. The student list is a file synced from the registrar (one user name per line); restart the hub after
# editing it (groups are only ever added to at start-up, never emptied).
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE}": {"users": instructors + [GRADER]},
    f"nbgrader-{COURSE}": {"users": instructors + students},
}
c.JupyterHub.load_roles = [
    {"name": f"formgrade-{COURSE}", "groups": [f"formgrade-{COURSE}"],
     "scopes": [f"access:services!service={COURSE}"]},
    {"name": f"nbgrader-{COURSE}", "groups": [f"nbgrader-{COURSE}"],
     "scopes": ["list:services", f"read:services!service={COURSE}"]},
    # a server's own token: the assignment list asks the hub for its user's groups and the course's service
    {"name": "server", "scopes": ["inherit"]},
    # the formgrader asks the hub who its users are and which groups they are in (without read:users every
    # formgrader page is a 500), and adds students to the course group from its "Manage students" page
    {"name": f"formgrader-{COURSE}", "services": [COURSE],
     "scopes": ["read:users", "list:users", "read:groups", "list:groups", f"groups!group=nbgrader-{COURSE}"]},
]

# Settings every server (and nbgrader inside it) must see: where the exchange is, where the machine-wide
# nbgrader_config.py is (JUPYTER_CONFIG_PATH, when it is not in /etc/jupyter).
PASSED = {k: os.environ[k] for k in ("NBGRADER_EXCHANGE", "JUPYTER_CONFIG_PATH") if k in os.environ}

# --- the course's formgrader: a single-user server run as a hub service by the grader account, in the course root
# (so nbgrader reads the course's nbgrader_config.py: layout, gradebook URL, and the refusal of unsandboxed autograde)
FORMGRADER_PORT = int(os.environ.get("FORMGRADER_PORT", "9999"))
c.JupyterHub.services = [{
    "name": COURSE,
    "url": f"http://127.0.0.1:{FORMGRADER_PORT}",
    "command": [os.path.join(BIN, "jupyterhub-singleuser"), f"--ServerApp.root_dir={COURSE_ROOT}"],
    "user": GRADER,
    "cwd": COURSE_ROOT,
    "environment": {"JUPYTERHUB_DEFAULT_URL": "/formgrader", "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
                    **PASSED},
    "oauth_no_confirm": True,
}]

# --- single-user servers: systemd units with quotas (HUB_SPAWNER=systemd), or plain processes run as each user
# (HUB_SPAWNER=local, a machine or container without systemd)
c.Spawner.cmd = [os.path.join(BIN, "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {"OMP_NUM_THREADS": "1", "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", **PASSED}
c.Spawner.http_timeout = 120  # a server's first start (a lab build check, torch's import) on a busy machine
if os.environ.get("HUB_SPAWNER", "systemd") == "systemd":
    c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
    c.SystemdSpawner.mem_limit = "2G"
    c.SystemdSpawner.cpu_limit = 1.0
    c.SystemdSpawner.isolate_tmp = True
    c.SystemdSpawner.isolate_devices = True
    c.SystemdSpawner.disable_user_sudo = True
    c.SystemdSpawner.unit_name_template = "jupyter-{USERNAME}-singleuser"
else:
    c.JupyterHub.spawner_class = "localprocess"

# --- idle servers are stopped after an hour (and any server after 12 hours), with the hub's own Python
c.JupyterHub.services.append({
    "name": "idle-culler",
    "command": [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600", "--max-age=43200"],
})
c.JupyterHub.load_roles.append({"name": "idle-culler", "services": ["idle-culler"],
                                "scopes": ["read:users:name", "read:users:activity", "servers"]})

# --- the hub itself: its database (PostgreSQL once hundreds log in at the start of a lab), where it listens (behind
# a TLS proxy such as nginx or caddy), and the ports it uses on 127.0.0.1 for its API and the proxy's
c.JupyterHub.db_url = os.environ.get("HUB_DB_URL", "sqlite:///jupyterhub.sqlite")
c.JupyterHub.bind_url = os.environ.get("HUB_BIND_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('HUB_PROXY_API_PORT', '8001')}"
c.JupyterHub.cleanup_servers = os.environ.get("HUB_SPAWNER", "systemd") != "systemd"  # units outlive a restart
