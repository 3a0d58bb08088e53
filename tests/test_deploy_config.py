"""The deploy/ configuration files, loaded the way JupyterHub and nbgrader load them (no hub needed; the running
hub is test_deploy_e2e.py): every setting documented in rnnkit.env, the formats JupyterHub 5 and nbgrader 0.9
expect, and credentials that match .ci/postgres.sh."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def _hub_config(monkeypatch, tmp_path, **env):
    students = tmp_path / "students.txt"
    students.write_text("s1\ns2\n\ns1\n")
    for key in ("HUB_SPAWNER", "HUB_ADMINS", "COURSE_GRADER", "COURSE_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COURSE_STUDENTS", str(students))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader("jupyterhub_config.py", path=str(DEPLOY)).load_config()


def test_every_setting_the_hub_reads_is_documented_in_rnnkit_env():
    config = (DEPLOY / "jupyterhub_config.py").read_text()
    read = set(re.findall(r"os\.environ(?:\.get)?[\(\[]\"([A-Z0-9_]+)\"", config))
    read |= set(re.findall(r"\"([A-Z0-9_]+)\"", re.search(r"PASSED = .*", config).group(0)))  # passed on
    documented = set(re.findall(r"^#? ?([A-Z0-9_]+)=", (DEPLOY / "rnnkit.env").read_text(), re.M))
    assert read and read <= documented, read - documented


def test_the_hub_config_for_a_class(monkeypatch, tmp_path):
    c = _hub_config(monkeypatch, tmp_path, HUB_ADMINS="prof ta")
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.Authenticator.allowed_users == {"prof", "ta", "s1", "s2", "grader-rnnkit"}
    assert c.Authenticator.admin_users == {"prof", "ta"}
    # JupyterHub >= 3.2 groups: {"group": {"users": [...]}}
    assert c.JupyterHub.load_groups == {"formgrade-rnnkit": {"users": ["prof", "ta", "grader-rnnkit"]},
                                        "nbgrader-rnnkit": {"users": ["prof", "ta", "s1", "s2"]}}
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["formgrader-rnnkit"]["services"] == ["rnnkit"]
    assert "read:users" in roles["formgrader-rnnkit"]["scopes"]  # without it every formgrader page is a 500
    assert roles["formgrade-rnnkit"]["scopes"] == ["access:services!service=rnnkit"]
    services = {s["name"]: s for s in c.JupyterHub.services}
    bin_dir = str(Path(sys.prefix) / "bin")
    assert services["rnnkit"]["command"][0] == f"{bin_dir}/jupyterhub-singleuser"  # the hub's own environment
    assert services["rnnkit"]["user"] == "grader-rnnkit" and services["rnnkit"]["cwd"] == "/home/grader-rnnkit/course"
    assert services["idle-culler"]["command"][:3] == [sys.executable, "-m", "jupyterhub_idle_culler"]
    assert c.Spawner.cmd == [f"{bin_dir}/jupyterhub-singleuser"]
    assert c.JupyterHub.spawner_class == "systemdspawner.SystemdSpawner"


@pytest.mark.parametrize("spawner, expected", [("systemd", "systemdspawner.SystemdSpawner"),
                                               ("local", "localprocess")])
def test_the_spawner_follows_hub_spawner(monkeypatch, tmp_path, spawner, expected):
    c = _hub_config(monkeypatch, tmp_path, HUB_SPAWNER=spawner)
    assert c.JupyterHub.spawner_class == expected
    assert c.JupyterHub.cleanup_servers is (spawner == "local")  # systemd units outlive a hub restart


def test_the_machine_wide_nbgrader_config_has_only_nbgrader_09_options(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXCHANGE", "/srv/x")
    c = PyFileConfigLoader("nbgrader_config.py", path=str(DEPLOY)).load_config()
    assert c.Exchange.root == "/srv/x" and c.Exchange.path_includes_course is True
    assert "course_titles" not in c.NbGrader  # not an nbgrader 0.9 option: every command warned


def test_the_grading_machines_gradebook_url_is_the_one_postgres_sh_creates():
    script = (REPO / ".ci" / "postgres.sh").read_text()
    role, password, db = (re.search(rf'{name}="\$\{{RNNKIT_PG_{name}:-(\w+)\}}"', script).group(1)
                          for name in ("ROLE", "PASSWORD", "DB"))
    c = PyFileConfigLoader("grader_nbgrader_config.py", path=str(DEPLOY)).load_config()
    assert c.CourseDirectory.db_url == f"postgresql+psycopg2://{role}:{password}@127.0.0.1:5432/{db}"


def test_the_course_config_reads_the_grading_machines_settings(tmp_path):
    """deploy/grader_nbgrader_config.py copied to grading/nbgrader_config.py is read after the course's own."""
    (tmp_path / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text())
    (tmp_path / "grading").mkdir()
    assert PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config().CourseDirectory.db_url \
        == f"sqlite:///{tmp_path}/grading/gradebook.db"
    (tmp_path / "grading" / "nbgrader_config.py").write_text((DEPLOY / "grader_nbgrader_config.py").read_text())
    url = PyFileConfigLoader("nbgrader_config.py", path=str(tmp_path)).load_config().CourseDirectory.db_url
    assert url.startswith("postgresql+psycopg2://")
