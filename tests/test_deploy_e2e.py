"""A class on the repository's deploy/ JupyterHub, end to end, as deploy/README.md runs it (LocalProcessSpawner).

Real Unix accounts (a grader account owning the course root, an instructor, two students) log in with PAM through
the hub on 127.0.0.1; the instructor generates and releases 01_rnn with the formgrader's buttons; the students fetch
it, fill it in through their own servers' REST API and submit; the instructor collects; root runs `make autograde`
(PostgreSQL gradebook, bubblewrap sandboxes); the formgrader's pages and API show the right scores, its Autograde
button refuses, a manual grade goes in, `make feedback` refreshes feedback and grades.csv, `nbgrader
release_feedback` runs as the grader account; the students fetch their feedback and see their score and no hidden
test. The hub must stop on SIGTERM. Everything started is stopped and the accounts are removed.

Needs root (accounts, PAM, setuid spawning), the network the first time (pip: jupyterhub + nbgrader into a separate
environment; npm: configurable-http-proxy), cached under .cache/e2e/ (git-ignored).
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grading_cases as gc
import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "e2e"
HUB_REQUIREMENTS = ["jupyterhub>=5,<6", "jupyterhub-idle-culler>=1.4,<3", "nbgrader>=0.9.6,<0.10",
                    "psycopg2-binary>=2.9,<3"]
PROXY = "configurable-http-proxy@5.1"  # node >= 18 (Debian 12's nodejs)
USERS = {"grader": "rke2e-grader", "teach": "rke2e-teach", "ann": "rke2e-ann", "bob": "rke2e-bob"}
ASSIGNMENT = "01_rnn"
SKIPPED_BY_BOB = "sample_until_eos"  # bob leaves this part undone

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(cmd, **kwargs):
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 600)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{cmd} failed ({exc.returncode}):\n{exc.stdout}\n{exc.stderr}") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _traversable(path: Path) -> bool:
    """Can every account reach ``path`` (each folder above it searchable by others)?"""
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.exists())


def _hub_environment() -> Path:
    """jupyterhub + nbgrader in their own venv, made once (readable by the students' accounts, which run from it)."""
    key = hashlib.sha1(" ".join(HUB_REQUIREMENTS).encode()).hexdigest()[:10]
    CACHE.mkdir(parents=True, exist_ok=True)
    venv = CACHE / f"hub-venv-{key}"
    if not _traversable(CACHE):  # a clone under /root: the students could not run it
        venv = Path("/var/tmp") / f"rnnkit-e2e-hub-venv-{key}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys._base_executable
        _run([base, "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", *HUB_REQUIREMENTS],
             env=dict(os.environ, PIP_CACHE_DIR=str(CACHE / "pip")))
        (venv / ".complete").touch()
    return venv


def _proxy() -> Path:
    node = CACHE / "node"
    binary = node / "node_modules" / ".bin" / "configurable-http-proxy"
    if not binary.exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is missing: apt-get install nodejs npm (deploy/README.md)")
        node.mkdir(parents=True, exist_ok=True)
        _run(["npm", "install", "--prefix", str(node), "--no-audit", "--no-fund", PROXY],
             env=dict(os.environ, npm_config_cache=str(CACHE / "npm")))
    return binary.parent


def _database() -> tuple[str, str]:
    """(admin URL, URL of a fresh database for this run) on the cluster .ci/postgres.sh starts."""
    url = _run(["bash", str(REPO / ".ci" / "postgres.sh")]).stdout.strip().splitlines()[-1]
    name = f"rnnkit_e2e_{os.getpid()}"
    _sql(url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    return url, url.rsplit("/", 1)[0] + "/" + name


def _sql(url: str, *statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


def _remove_user(name: str) -> None:
    """Stop what still runs as ``name`` (processes this test's hub started for it), then delete the account."""
    try:
        uid = int(_run(["id", "-u", name], check=False).stdout.strip() or -1)
    except ValueError:
        return
    if uid < 0:
        return
    for _ in range(2):
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if proc.stat().st_uid == uid:
                        os.kill(int(proc.name), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass
        time.sleep(0.5)
    subprocess.run(["userdel", "-r", name], capture_output=True)


def _stop_proxy(pid_file: Path) -> None:
    """The proxy runs in a session of its own; a hub that failed to start leaves it running (its pid is on file)."""
    try:
        pid = int(pid_file.read_text().strip())
        if b"configurable-http-proxy" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # a stale file: that pid is someone else's now
        os.kill(pid, signal.SIGTERM)
        for _ in range(20):
            os.kill(pid, 0)
            time.sleep(0.25)
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


class Class:
    """The running deployment: URLs, accounts, folders, and an HTTP session per user."""

    def __init__(self, tmp: Path):
        import requests

        self.requests = requests
        self.tmp = tmp
        self.course = tmp / "course"
        self.passwords = {name: secrets.token_urlsafe(12) for name in USERS.values()}
        self.port = _free_port()
        self.hub = f"http://127.0.0.1:{self.port}"
        self.hub_process: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}

    def call(self, user: str, method: str, path: str, expect: int | tuple = 200, **kwargs):
        headers = {"Authorization": f"token {self.tokens[user]}"}
        r = self.requests.request(method, self.hub + path, headers=headers, timeout=300, **kwargs)
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert r.status_code in expected, f"{method} {path} as {user}: {r.status_code}\n{r.text[:2000]}\n" \
                                          f"{self.hub_log()}"
        return r

    def hub_log(self) -> str:
        log = self.tmp / "hub.log"
        return "--- hub log (end) ---\n" + log.read_text()[-8000:] if log.exists() else ""

    def login(self, user: str) -> None:
        """PAM login through the hub's form, then a token made by the user's own session (as a user would)."""
        s = self.requests.Session()
        s.get(f"{self.hub}/hub/login", timeout=60)
        xsrf = s.cookies.get("_xsrf")
        r = s.post(f"{self.hub}/hub/login", data={"username": user, "password": self.passwords[user], "_xsrf": xsrf},
                   allow_redirects=False, timeout=60)
        assert r.status_code == 302 and "login" not in r.headers.get("location", ""), \
            f"PAM login of {user} failed: {r.status_code} {r.headers}\n{self.hub_log()}"
        r = s.post(f"{self.hub}/hub/api/users/{user}/tokens", json={"note": "e2e", "expires_in": 3600},
                   headers={"X-XSRFToken": s.cookies.get("_xsrf") or xsrf}, timeout=60)
        assert r.status_code in (200, 201), f"token for {user}: {r.status_code} {r.text}"
        self.tokens[user] = r.json()["token"]

    def start_server(self, user: str) -> None:
        self.call(user, "POST", f"/hub/api/users/{user}/server", expect=(201, 202))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            server = self.call(user, "GET", f"/hub/api/users/{user}").json()["servers"].get("", {})
            if server.get("ready"):
                return
            time.sleep(1)
        raise AssertionError(f"{user}'s server did not start\n{self.hub_log()}")

    def as_grader(self, *cmd: str):
        """A command run by the grader account in the course root (as deploy/README.md says to)."""
        env = {"PATH": f"{self.venv}/bin:/usr/bin:/bin", "HOME": f"/home/{USERS['grader']}", "LANG": "C.UTF-8",
               "JUPYTER_CONFIG_PATH": str(self.tmp / "etc-jupyter"), "NBGRADER_EXCHANGE": str(self.tmp / "exchange")}
        return _run(["runuser", "-u", USERS["grader"], "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                     *cmd], cwd=self.course)

    def make(self, target: str, *args: str):
        return _run(["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed-stamp", target,
                     "JOBS=2", "AUTOGRADE_ARGS=" + " ".join([f"--root={self.course}", *args])])


@pytest.fixture(scope="module")
def deployment():
    if os.geteuid() != 0:
        pytest.skip("the deployment test needs root: it creates Unix accounts, logs in with PAM and runs servers "
                    "as those accounts (CI runs make test as root)")
    venv, proxy_bin = _hub_environment(), _proxy()
    admin_url, db_url = _database()
    tmp = Path(tempfile.mkdtemp(prefix="rnnkit-e2e-"))
    os.chmod(tmp, 0o755)
    cls = Class(tmp)
    cls.venv = venv
    try:
        for name in USERS.values():
            _remove_user(name)  # left over from an interrupted run
            _run(["useradd", "-m", "-s", "/bin/bash", name])
            os.chmod(f"/home/{name}", 0o700)
        _run(["chpasswd"], input="".join(f"{u}:{p}\n" for u, p in cls.passwords.items()))
        _course(cls, db_url)
        _start_hub(cls, proxy_bin)
        yield cls
    finally:
        if cls.hub_process is not None and cls.hub_process.poll() is None:
            cls.hub_process.send_signal(signal.SIGTERM)
            try:
                cls.hub_process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(cls.hub_process.pid, signal.SIGKILL)
                cls.hub_process.wait(10)
        _stop_proxy(tmp / "hub" / "jupyterhub-proxy.pid")
        for name in USERS.values():
            _remove_user(name)
        try:
            _sql(admin_url, f"DROP DATABASE IF EXISTS {db_url.rsplit('/', 1)[1]} WITH (FORCE)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _course(cls: Class, db_url: str) -> None:
    """The course root as deploy/README.md sets it up: the grader account's, 0700; the grading machine's settings
    in grading/nbgrader_config.py; the machine-wide nbgrader config; the exchange (1777); the class list."""
    course = cls.course
    course.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", course)
    for folder in ("solutions", "exercises"):
        shutil.copytree(REPO / folder / ASSIGNMENT, course / folder / ASSIGNMENT)
    (course / "grading").mkdir()
    grader_config = (REPO / "deploy" / "grader_nbgrader_config.py").read_text()
    default = "postgresql+psycopg2://nbgrader:nbgrader@127.0.0.1:5432/nbgrader"
    assert default in grader_config
    (course / "grading" / "nbgrader_config.py").write_text(
        grader_config.replace(default, db_url.replace("postgresql://", "postgresql+psycopg2://")))
    _run(["chown", "-R", f"{USERS['grader']}:{USERS['grader']}", str(course)])
    os.chmod(course, 0o700)
    (cls.tmp / "etc-jupyter").mkdir()
    shutil.copy(REPO / "deploy" / "nbgrader_config.py", cls.tmp / "etc-jupyter" / "nbgrader_config.py")
    (cls.tmp / "exchange").mkdir()
    os.chmod(cls.tmp / "exchange", 0o1777)
    (cls.tmp / "students.txt").write_text(f"{USERS['ann']}\n{USERS['bob']}\n")


def _start_hub(cls: Class, proxy_bin: Path) -> None:
    hub_dir = cls.tmp / "hub"
    hub_dir.mkdir(mode=0o700)
    documented = dict(re.findall(r'^([A-Z0-9_]+)="?([^"\n]*)"?$', (REPO / "deploy" / "rnnkit.env").read_text(), re.M))
    assert documented["HUB_AUTHENTICATOR"] == "pam"  # the default login, as shipped
    settings = {**documented,  # deploy/rnnkit.env, with this machine's accounts, paths and free ports
        "HUB_ADMINS": USERS["teach"], "COURSE_STUDENTS": str(cls.tmp / "students.txt"),
        "COURSE_GRADER": USERS["grader"], "COURSE_ROOT": str(cls.course),
        "NBGRADER_EXCHANGE": str(cls.tmp / "exchange"), "HUB_SPAWNER": "local", "HUB_BIND_URL": cls.hub,
        "HUB_API_PORT": str(_free_port()), "HUB_PROXY_API_PORT": str(_free_port()),
        "FORMGRADER_PORT": str(_free_port()), "JUPYTER_CONFIG_PATH": str(cls.tmp / "etc-jupyter"),
    }
    env = {"PATH": f"{cls.venv}/bin:{proxy_bin}:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **settings}
    # JupyterHub gives a managed service (the formgrader) 10 s to answer, then exits; on a loaded machine its first
    # start can take longer, and systemd's Restart=on-failure (deploy/jupyterhub.service) starts the hub again
    for _attempt in range(3):
        with open(cls.tmp / "hub.log", "a") as log:
            cls.hub_process = subprocess.Popen([str(cls.venv / "bin" / "jupyterhub"), "-f",
                                                str(REPO / "deploy" / "jupyterhub_config.py")],
                                               cwd=hub_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and cls.hub_process.poll() is None:
            try:  # the hub answers before its services are up: "now running" comes after them
                if "JupyterHub is now running" in cls.hub_log() and \
                        cls.requests.get(f"{cls.hub}/hub/health", timeout=5).status_code == 200:
                    return
            except cls.requests.ConnectionError:
                pass
            time.sleep(1)
        if cls.hub_process.poll() is None or "Cannot connect to rnnkit service" not in cls.hub_log():
            break
    raise AssertionError(f"the hub did not start\n{cls.hub_log()}")


def _fill_in(released: dict, skip: str | None) -> dict:
    """The student's work: every answer cell of the released notebook replaced by the solution's code (minus
    ``skip``, left as released)."""
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source for c in gc.correct_notebook(ASSIGNMENT).cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in released["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution") and grade_id in solved and grade_id != skip:
            cell["source"] = solved[grade_id]
    return released


def test_a_class_goes_round_on_the_deployed_hub(deployment):
    cls, ann, bob, teach = deployment, USERS["ann"], USERS["bob"], USERS["teach"]
    fg = "/services/rnnkit/formgrader"
    for user in (teach, ann, bob):
        cls.login(user)

    # the instructor generates and releases the assignment with the formgrader's buttons (run as the grader account)
    for action in ("assign", "release"):
        result = cls.call(teach, "POST", f"{fg}/api/assignment/{ASSIGNMENT}/{action}").json()
        assert result["success"], result

    # students fetch, fill in through the contents API, submit
    path = f"rnnkit/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    for user, skip in ((ann, None), (bob, SKIPPED_BY_BOB)):
        cls.start_server(user)
        cls.call(user, "POST", f"/user/{user}/assignments/fetch",
                 data={"course_id": "rnnkit", "assignment_id": ASSIGNMENT})
        released = cls.call(user, "GET", f"/user/{user}/api/contents/{path}").json()["content"]
        cls.call(user, "PUT", f"/user/{user}/api/contents/{path}", expect=(200, 201),
                 json={"type": "notebook", "format": "json", "content": _fill_in(released, skip)})
        listing = cls.call(user, "POST", f"/user/{user}/assignments/submit",
                           data={"course_id": "rnnkit", "assignment_id": ASSIGNMENT}).json()
        assert not (isinstance(listing, dict) and listing.get("success") is False), listing

    result = cls.call(teach, "POST", f"{fg}/api/assignment/{ASSIGNMENT}/collect").json()
    assert result["success"], result
    submitted = cls.course / "grading" / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == [ann, bob]

    cls.make("autograde", "--quiet")
    total = sum(gc.points(ASSIGNMENT).values())
    expected = {ann: total, bob: total - gc.points_of_check(ASSIGNMENT, SKIPPED_BY_BOB)}
    assert 0 < expected[bob] < total
    grader_uid = (cls.course.stat().st_uid)
    assert {p.stat().st_uid for p in (cls.course / "grading").rglob("*")} == {grader_uid}  # handed back
    assert stat.S_IMODE((submitted / bob / ASSIGNMENT).stat().st_mode) == 0o700

    # the formgrader, through the hub: pages and scores
    for page in ("", "/manage_assignments", f"/gradebook/{ASSIGNMENT}/{ASSIGNMENT}", "/manage_students"):
        r = cls.call(teach, "GET", fg + page)
        assert "text/html" in r.headers["content-type"]
    rows = {row["student"]: row for row in cls.call(teach, "GET", f"{fg}/api/submissions/{ASSIGNMENT}").json()}
    assert {s: rows[s]["score"] for s in (ann, bob)} == expected
    cls.call(ann, "GET", fg, expect=403)  # a student may not open it

    # nbgrader's own Autograde button refuses, naming make autograde, and changes nothing
    before = (cls.course / "grading" / "autograded" / ann / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes()
    result = cls.call(teach, "POST", f"{fg}/api/submission/{ASSIGNMENT}/{ann}/autograde").json()
    assert not result["success"] and "make autograde" in result["log"]
    assert (cls.course / "grading" / "autograded" / ann / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_bytes() == before

    # a manual grade for bob's undone part, through the formgrader's API
    submissions = cls.call(teach, "GET", f"{fg}/api/submitted_notebooks/{ASSIGNMENT}/{ASSIGNMENT}").json()
    [notebook_id] = [s["id"] for s in submissions if s["student"] == bob]
    grades = cls.call(teach, "GET", f"{fg}/api/grades", params={"submission_id": notebook_id}).json()
    [grade] = [g for g in grades if g["name"] == f"test_{SKIPPED_BY_BOB}"]
    cls.call(teach, "PUT", f"{fg}/api/grade/{grade['id']}", json={"manual_score": 1.0})
    cls.make("feedback")  # the HTML feedback and grades.csv, from the gradebook as it is now
    csv = gc.read_export(cls.course / "grading" / "grades.csv")
    assert {s: float(csv[(s, ASSIGNMENT)]["score"]) for s in (ann, bob)} == {ann: total, bob: expected[bob] + 1}
    assert csv[(ann, ASSIGNMENT)]["timestamp"]
    result = cls.call(teach, "POST", f"{fg}/api/assignment/{ASSIGNMENT}/generate_feedback").json()
    assert result["success"], result  # the button, as the grader account, over what root wrote

    cls.as_grader(str(cls.venv / "bin" / "nbgrader"), "release_feedback", ASSIGNMENT)
    for user, score in ((ann, total), (bob, expected[bob] + 1)):
        cls.call(user, "POST", f"/user/{user}/assignments/fetch_feedback",
                 data={"course_id": "rnnkit", "assignment_id": ASSIGNMENT})
        folder = f"rnnkit/{ASSIGNMENT}/feedback"
        [stamp] = cls.call(user, "GET", f"/user/{user}/api/contents/{folder}").json()["content"]
        html = cls.call(user, "GET", f"/user/{user}/api/contents/{stamp['path']}/{ASSIGNMENT}.html",
                        params={"type": "file", "format": "text"}).json()["content"]
        assert f"{ASSIGNMENT} (Score: {float(score)} / {float(total)})" in html  # nbgrader's feedback heading
        assert "grading.check" not in html and "HIDDEN TESTS" not in html

    # the hub stops on SIGTERM (with its proxy, the formgrader, the culler and the students' servers)
    cls.hub_process.send_signal(signal.SIGTERM)
    assert cls.hub_process.wait(30) is not None
    log = (cls.tmp / "hub.log").read_text()
    assert "idle-culler" in log and "Service idle-culler exited" not in log, log[-3000:]
