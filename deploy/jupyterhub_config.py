"""JupyterHub for one course of hundreds of students, with nbgrader's exchange (see deploy/README.md).

Students and instructors get single-user servers (systemd units, so each has memory/CPU quotas); the course's
formgrader runs as a hub service owned by the `grader-rnnkit` account, whose home holds this repository (the course
root: solutions/, exercises/, nbgrader_config.py). Grading itself (`make autograde JOBS=N`) runs on the grading
machine as root, in bubblewrap sandboxes, never inside a student's or the formgrader's server.
"""
import os

c = get_config()  # noqa: F821

COURSE = "rnnkit"
GRADER = f"grader-{COURSE}"

# --- who: your institution's login (LDAP, OAuth, ...). Course membership comes from the groups below.
c.JupyterHub.authenticator_class = os.environ.get("HUB_AUTHENTICATOR", "oauthenticator.generic.GenericOAuthenticator")
c.Authenticator.allow_existing_users = True
c.Authenticator.admin_users = set(os.environ.get("HUB_ADMINS", "").split()) or {"instructor1"}

# nbgrader reads groups: `formgrade-<course>` may open the formgrader, `nbgrader-<course>` sees the course's
# assignments. Keep the student list in a file synced from the registrar (one user name per line).
students_file = os.environ.get("COURSE_STUDENTS", "/srv/nbgrader/students.txt")
students = open(students_file).read().split() if os.path.exists(students_file) else []
instructors = sorted(c.Authenticator.admin_users)
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE}": instructors + [GRADER],
    f"nbgrader-{COURSE}": instructors + students,
}
c.JupyterHub.load_roles = [
    {"name": f"formgrade-{COURSE}", "groups": [f"formgrade-{COURSE}"],
     "scopes": [f"access:services!service={COURSE}"]},
    {"name": f"nbgrader-{COURSE}", "groups": [f"nbgrader-{COURSE}"],
     "scopes": ["list:services", f"read:services!service={COURSE}"]},
    {"name": "server", "scopes": ["inherit"]},  # the assignment-list extension asks the hub which courses exist
]

# --- the course's formgrader: a single-user server run as a hub service by the grader account
c.JupyterHub.services = [{
    "name": COURSE,
    "url": "http://127.0.0.1:9999",
    "command": ["jupyterhub-singleuser", "--ServerApp.root_dir=/home/grader-rnnkit/course"],
    "user": GRADER,
    "cwd": f"/home/{GRADER}/course",
    "environment": {"JUPYTERHUB_DEFAULT_URL": "/lab"},  # a managed service: the hub issues its API token
}]

# --- hundreds of servers on one machine: systemd units with quotas, culled when idle
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
c.SystemdSpawner.mem_limit = "2G"
c.SystemdSpawner.cpu_limit = 1.0
c.SystemdSpawner.isolate_tmp = True
c.SystemdSpawner.isolate_devices = True
c.SystemdSpawner.disable_user_sudo = True
c.Spawner.default_url = "/lab"
c.Spawner.environment = {"OMP_NUM_THREADS": "1"}  # torch on a shared machine: one thread per student
c.JupyterHub.services.append({
    "name": "idle-culler",
    "command": ["python3", "-m", "jupyterhub_idle_culler", "--timeout=3600", "--max-age=43200"],
})
c.JupyterHub.load_roles.append({"name": "idle-culler", "services": ["idle-culler"],
                                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]})

# the hub's own database: PostgreSQL rather than sqlite once hundreds log in at the start of a lab
c.JupyterHub.db_url = os.environ.get("HUB_DB_URL", "sqlite:///jupyterhub.sqlite")
c.JupyterHub.bind_url = "http://127.0.0.1:8000"  # behind the TLS proxy (nginx/caddy)
