"""The grading sandbox (rnnkit.grading.sandbox + runner), the trusted notebook rebuilding (notebooks.py), and the
batch guarantees of `make autograde`: JOBS=2 gives exactly the sequential result, and a PostgreSQL gradebook works.

The isolation checks run inside ONE small sandboxed notebook (no torch import) and report what they see; the
assertions are made here, in the trusted process.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import grading_cases as gc
import nbformat
import pytest

from rnnkit.grading import notebooks, sandbox

IN_CI = os.environ.get("CI") == "true"


def _need_sandbox():
    try:
        sandbox.check_available()
    except sandbox.SandboxUnavailable as exc:
        if IN_CI:
            pytest.fail(f"the grading sandbox must work in CI: {exc}")
        pytest.skip(str(exc))


def _notebook(folder: Path, *cells: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / "nb.ipynb"))
    return "nb.ipynb"


def _cell(result: sandbox.Result, index: int) -> dict:
    return json.loads(result.records[f"cell/{index}.json"])


def _stdout(result: sandbox.Result, index: int) -> str:
    return "".join(o.get("text", "") for o in _cell(result, index)["outputs"] if o["output_type"] == "stream")


PROBE = r'''
import json, os, resource, socket
seen = {"uid": os.getuid(), "gid": os.getgid(), "root": sorted(os.listdir("/")),
        "repo": sorted(os.listdir(os.path.dirname(os.path.dirname(__import__("rnnkit").__file__)))),
        "as": resource.getrlimit(resource.RLIMIT_AS)[0], "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "interfaces": [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]],
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}
import sys
seen["trees"] = sorted({os.path.dirname(__import__("rnnkit").__file__), sys.prefix, sys.base_prefix})
seen["ancestors"] = {}
for tree in seen["trees"]:
    folder = os.path.dirname(tree)
    while folder not in ("/", "/tmp", "/home/student", "/dev/shm") and not any(
            folder.startswith(t + "/") or folder == t for t in seen["trees"]):  # scratch tmpfs may hold anything
        seen["ancestors"][folder] = sorted(os.listdir(folder))
        folder = os.path.dirname(folder)
for name, target in {"net": ("1.1.1.1", 53), "loopback_host": ("127.0.0.1", 22)}.items():
    try:
        socket.create_connection(target, timeout=2).close()
        seen[name] = "connected"
    except OSError as exc:
        seen[name] = type(exc).__name__
for name, path in {"usr": "/usr/x", "input": "/input/x", "venv": os.__file__ + ".x"}.items():
    try:
        open(path, "w").close()
        seen["write_" + name] = "written"
    except OSError as exc:
        seen["write_" + name] = type(exc).__name__
print(json.dumps(seen))
'''


@pytest.fixture(scope="module")
def probe_run():
    _need_sandbox()
    with tempfile.TemporaryDirectory(prefix="rnnkit-sbx-") as tmp:
        name = _notebook(Path(tmp) / "in", PROBE,
                         "import numpy as np\nnp.savez(os.environ['RNNKIT_GRADING_EXPORT'] + '/x.npz', a=np.arange(3))",
                         "print('z' * 5_000_000)")
        os.chmod(tmp, 0o755)
        yield sandbox.run(Path(tmp) / "in", name, slot=3, limits=sandbox.Limits(cell_timeout=60,
                                                                                submission_timeout=180))


def test_sandbox_runs_as_unprivileged_uid_with_limits(probe_run):
    seen = json.loads(_stdout(probe_run, 0))
    if os.geteuid() == 0:
        assert seen["uid"] == seen["gid"] == probe_run.uid >= sandbox.BASE_UID
    assert seen["uid"] != 0
    assert seen["as"] == sandbox.Limits().memory
    assert 0 < seen["nproc"] <= sandbox.Limits().processes + (0 if os.geteuid() == 0 else 10_000)


def test_sandbox_sees_no_network_and_no_other_files(probe_run):
    seen = json.loads(_stdout(probe_run, 0))
    assert seen["interfaces"] == ["lo"]
    assert seen["net"] != "connected" and seen["loopback_host"] != "connected"
    # the system trees, the scratch mounts and /input -- plus the first folder of wherever this checkout, its venv and
    # the base interpreter live (/work, /check, /opt, ... depending on the machine), made only as a path to them
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp", "home", "input"}
    trees = [Path(t) for t in seen["trees"]]
    assert set(seen["root"]) <= system | {t.parts[1] for t in trees}
    mounts = trees + [Path(p) for p in ("/tmp", "/home/student", "/dev/shm")]  # $HOME sits beside a /home/<user> venv
    for folder, names in seen["ancestors"].items():  # a folder on the way to a tree shows only the next steps
        steps = {t.relative_to(folder).parts[0] for t in mounts if t.is_relative_to(folder) and t != Path(folder)}
        assert set(names) <= steps, (folder, names)
    assert set(seen["repo"]) <= {"rnnkit", ".venv"}  # no solutions/, .git, grading/, exercises/
    assert all(seen[f"write_{k}"] != "written" for k in ("usr", "input", "venv"))
    assert max(seen["pids"]) < 100  # its own PID namespace: none of the host's processes


def test_exports_and_capped_output_come_back(probe_run):
    assert probe_run.returncode == 0 and not probe_run.killed
    assert "export/1/x.npz" in probe_run.records  # tagged with the cell that wrote it
    assert len(_stdout(probe_run, 2)) <= 20_000
    assert _cell(probe_run, 2)["truncated"] > 4_900_000


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def test_submission_wall_clock_kills_the_whole_tree(tmp_path):
    _need_sandbox()
    os.chmod(tmp_path, 0o755)
    name = _notebook(tmp_path / "in", "import time, os\nos.fork()\ntime.sleep(2)", *["time.sleep(2)"] * 20)
    result = sandbox.run(tmp_path / "in", name, slot=4, limits=sandbox.Limits(cell_timeout=30, submission_timeout=8))
    assert result.killed and result.seconds < 40
    assert "done.json" not in result.records
    if os.geteuid() == 0:  # nothing of that sandbox survives (the PID namespace is torn down, give it a moment)
        for _ in range(50):
            if not _processes_of(sandbox.BASE_UID + 4):
                break
            time.sleep(0.1)
        else:
            pytest.fail("processes of the killed sandbox survived")


def test_stream_cap_and_garbled_records():
    good = b"".join(struct.pack(">I", len(n)) + n + struct.pack(">Q", len(d)) + d
                    for n, d in [(b"a.json", b"{}"), (b"export/1/x.npz", b"12345")])
    assert sandbox.parse_records(good) == {"a.json": b"{}", "export/1/x.npz": b"12345"}
    assert sandbox.parse_records(good[:-2]) == {"a.json": b"{}"}  # a cut-off record is dropped, not misread
    assert sandbox.parse_records(b"\xff" * 64) == {}
    assert sandbox.parse_records(struct.pack(">I", 3) + b"\xff\xfe\xfd" + struct.pack(">Q", 0)) == {}


# ------------------------------------------------------------------ trusted notebook rebuilding (no sandbox)

def _source():
    src = gc.REPO / "solutions" / "01_rnn" / "01_rnn.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "r.ipynb"
        nbformat.write(gc.correct_notebook("01_rnn"), str(release))  # stands in for the release here
        return notebooks.load_source(str(src), str(release))


def test_prepare_restores_test_cells_and_source_metadata():
    src = _source()
    student = gc.correct_notebook("01_rnn")
    test_cell = gc.find(student, "test_rnn_forward")
    student.cells.remove(test_cell)
    gc.find(student, "test_rnn_cell_forward").source = "print('passed')"
    gc.find(student, "test_sample_until_eos").metadata["nbgrader"]["points"] = 1000
    cells = json.loads(nbformat.writes(student))["cells"]
    out = notebooks.prepare(src, cells)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in out.cells]
    assert ids.index("test_rnn_forward") == ids.index("rnn_forward") + 1  # put back where it was
    assert "grading.check" in gc.find(out, "test_rnn_cell_forward").source  # the source's, not the student's
    assert gc.find(out, "test_sample_until_eos").metadata["nbgrader"]["points"] != 1000


def test_read_submission_reasons(tmp_path):
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "list.ipynb").write_text("[1, 2]")
    (tmp_path / "link.ipynb").symlink_to("/etc/passwd")
    assert "not valid JSON" in notebooks.read_submission(str(tmp_path / "bad.ipynb"))[1]
    assert "not a Jupyter notebook" in notebooks.read_submission(str(tmp_path / "list.ipynb"))[1]
    assert notebooks.read_submission(str(tmp_path / "link.ipynb"))[0] is None  # a symlink is never followed
    assert "not submitted" in notebooks.read_submission(str(tmp_path / "missing.ipynb"))[1]


def test_check_names_parsed_from_source():
    assert notebooks.check_names("x = 1\n%time y\nfrom rnnkit import grading\ngrading.check('a', f)\ncheck(\"b\", g)"
                                 ) == ["a", "b"]


# ------------------------------------------------------------------ batch guarantees: JOBS=2 == sequential, Postgres

def _postgres_url() -> str | None:
    script = gc.REPO / ".ci" / "postgres.sh"
    if shutil.which("pg_lsclusters") is None:
        return None
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return None
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def batch():
    """6 generated submissions of 01_rnn graded twice: sequentially into sqlite, with JOBS=2 into PostgreSQL
    (a fresh database) when it is available, else into a second sqlite file."""
    _need_sandbox()
    admin_url = _postgres_url()
    with tempfile.TemporaryDirectory(prefix="rnnkit-batch-") as tmp:
        course = gc.make_course(Path(tmp) / "course", ["01_rnn"])
        gc.generated_batch(course, ["01_rnn"], students=6, seed=1)
        runs, pg_db = {}, None
        if admin_url:
            import psycopg2

            pg_db = f"rnnkit_test_{os.getpid()}"
            conn = psycopg2.connect(admin_url)
            conn.autocommit = True
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {pg_db}")
            conn.cursor().execute(f"CREATE DATABASE {pg_db}")
        try:
            for label, jobs, url in (("sequential", 1, f"sqlite:///{course}/grading/seq.db"),
                                     ("parallel", 2, admin_url.rsplit("/", 1)[0] + f"/{pg_db}" if pg_db
                                      else f"sqlite:///{course}/grading/par.db")):
                done = gc.make_autograde(course, jobs=jobs, db_url=url, export=f"{label}.csv", feedback=False,
                                         cell_timeout=30)
                assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
                runs[label] = {"export": gc.read_export(course / f"{label}.csv"), "scores": gc.gradebook_scores(url),
                               "url": url}
        finally:
            if pg_db:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS {pg_db} WITH (FORCE)")
                conn.close()
        yield {"runs": runs, "postgres": pg_db is not None}


@pytest.mark.slow
def test_parallel_autograde_equals_sequential(batch):
    seq, par = batch["runs"]["sequential"], batch["runs"]["parallel"]
    assert len(seq["export"]) == 6 and seq["export"] == par["export"]
    assert seq["scores"] == par["scores"] and len(seq["scores"]) == 6 * len(gc.points("01_rnn"))
    assert len({row["score"] for row in seq["export"].values()}) > 1  # a real mix of grades, not all equal


@pytest.mark.slow
def test_postgres_gradebook(batch):
    if not batch["postgres"]:
        if IN_CI:
            pytest.fail("PostgreSQL is not available: .ci/run must install Debian's `postgresql` and run "
                        ".ci/postgres.sh (it starts the cluster on 127.0.0.1)")
        pytest.skip("PostgreSQL not available (apt-get install postgresql; .ci/postgres.sh)")
    assert batch["runs"]["parallel"]["url"].startswith("postgresql")
    assert batch["runs"]["parallel"]["scores"] == batch["runs"]["sequential"]["scores"]


def test_forged_or_pickled_records_score_zero_without_breaking_the_grader(tmp_path):
    """Everything from the sandbox is untrusted bytes: garbage, wrong types and pickles fail only their own check."""
    import io

    import numpy as np

    from rnnkit.grading import autograde

    release = tmp_path / "r.ipynb"
    nbformat.write(gc.correct_notebook("01_rnn"), str(release))
    src = notebooks.load_source(str(gc.REPO / "solutions" / "01_rnn" / "01_rnn.ipynb"), str(release))
    prepared = notebooks.prepare(src, json.loads(nbformat.writes(gc.correct_notebook("01_rnn")))["cells"])
    index = {c.metadata.get("nbgrader", {}).get("grade_id"): i for i, c in enumerate(prepared.cells)}
    pickled = io.BytesIO()
    np.savez(pickled, spec=np.array(["rnn_forward"], dtype=object))  # an object array needs pickle to load
    records = {
        "cell/1.json": json.dumps({"status": ["x"], "truncated": "many", "outputs": {"a": 1}}).encode(),
        "cell/3.json": b"\xff\xfe",
        f"export/{index['test_rnn_cell_forward']}/rnn_cell_forward.npz": b"PK\x03\x04 not a zip",
        f"export/{index['test_rnn_forward']}/rnn_forward.npz": pickled.getvalue(),
        "cell/zz.json": b"{}",
    }
    job = autograde.Job("mallory", "01_rnn", "01_rnn", src, tmp_path)
    graded = autograde.judge_notebook(job, prepared, sandbox.Result(records=records), None, sandbox.Limits())
    assert graded.scores["test_rnn_cell_forward"] == 0 and graded.scores["test_rnn_forward"] == 0
    assert "could not be read as plain data" in graded.messages["test_rnn_forward"]
    assert len(graded.autograded_nb.cells) == len(prepared.cells)


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("sandbox uids are handed out only when grading as root (else the grader's own uid is used)")


def test_two_grading_runs_never_share_a_sandbox_uid(tmp_path, monkeypatch):
    """RLIMIT_NPROC counts a uid's tasks machine-wide: two `make autograde` runs on one machine that both used
    BASE_UID + 0 let one run's fork bomb starve the other's kernels (seen as students scored 0 with 'the grading run
    was cut short' while a test run graded beside it). Each sandbox now holds its uid with an flock."""
    _need_root()
    monkeypatch.setenv("RNNKIT_SANDBOX_LOCK_DIR", str(tmp_path))
    with sandbox._claim_uid(3) as first, sandbox._claim_uid(3) as second, sandbox._claim_uid(3) as third:
        assert len({first, second, third}) == 3 and first == sandbox.BASE_UID + 3
    with sandbox._claim_uid(3) as again:  # released when the sandbox is over
        assert again == sandbox.BASE_UID + 3


def test_a_uid_that_runs_processes_is_not_handed_out(tmp_path, monkeypatch):
    _need_root()
    monkeypatch.setenv("RNNKIT_SANDBOX_LOCK_DIR", str(tmp_path))
    busy = sandbox.BASE_UID + 7
    sleeper = subprocess.Popen(["setpriv", f"--reuid={busy}", f"--regid={busy}", "--clear-groups", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while not _processes_of(busy) and time.monotonic() < deadline:
            time.sleep(0.05)
        with sandbox._claim_uid(7) as uid:
            assert uid != busy and uid >= sandbox.BASE_UID
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_fork_bomb_in_one_run_leaves_a_concurrent_runs_kernel_alone(tmp_path):
    """The behaviour behind the uid claim: a fork bomb graded at slot 0 and, beside it, another run's notebook also at
    slot 0. With one shared uid the second kernel never ran a cell; with claimed uids it runs normally."""
    _need_sandbox()
    _need_root()
    limits = sandbox.Limits(cell_timeout=10, submission_timeout=60)
    results = {}

    def grade(key, folder, source):
        folder.mkdir()
        os.chmod(folder, 0o755)
        results[key] = sandbox.run(folder / "in", _notebook(folder / "in", source), slot=0, limits=limits)

    bomb = threading.Thread(target=grade, args=("bomb", tmp_path / "bomb", (
        "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)")))
    bomb.start()
    deadline = time.monotonic() + 20
    while not _processes_of(sandbox.BASE_UID) and time.monotonic() < deadline:  # the bomb's sandbox is up
        time.sleep(0.1)
    time.sleep(2)  # ... and forking
    grade("other", tmp_path / "other", "print('fine', sum(range(4)))")
    bomb.join()
    assert results["bomb"].uid != results["other"].uid
    assert _cell(results["other"], 0)["status"] == "ok" and "fine 6" in _stdout(results["other"], 0)
