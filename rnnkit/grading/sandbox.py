r"""Run one student's notebook in a sandbox: its own process tree, no network, a private copy of just that submission,
bounded memory, processes, output and time. What comes back is data (framed records, see
:mod:`rnnkit.grading.runner`), never a verdict: judging happens in the trusted parent (:mod:`rnnkit.grading.autograde`).

Why bubblewrap, started as root, dropping to a per-slot unprivileged uid with ``setpriv``:

* ``bwrap`` (Debian package ``bubblewrap``) builds the whole view from nothing: only ``/usr``, the Python install, the
  virtual environment and the ``rnnkit`` package are bound in, all read-only; ``/tmp``, ``$HOME`` and ``/dev/shm`` are
  size-capped tmpfs; the submission is a read-only bind of a folder the grader prepared. Other submissions, the
  gradebook, ``solutions/``, the repository's ``.git`` and the rest of the file system simply do not exist inside.
  New network, PID, IPC and UTS namespaces: no interface but a loopback, no other processes visible, and killing
  ``bwrap`` (``--die-with-parent``) tears the whole PID namespace down, fork bombs included.
* ``RLIMIT_NPROC`` counts the tasks of one *real uid* and root is exempt, so the tree must run as a plain uid. A user
  namespace (``bwrap --unshare-user --uid``) would still be root outside (uid 0 mapped), and an unprivileged ``bwrap``
  could not reach a Python installed under ``/root``. So ``bwrap`` runs privileged with only ``CAP_SETUID`` and
  ``CAP_SETGID``; its first command is ``setpriv`` switching to uid/gid ``BASE_UID + slot`` (no supplementary groups,
  empty bounding set, ``no_new_privs``). Each sandbox holds its own uid: an ``flock`` per uid, machine-wide, so two
  grading runs on one machine never share one either (a uid in use goes to the next free one). Without root, the
  sandbox falls back to an unprivileged user namespace (same views and limits; the process limit then also counts the
  user's other processes, so it is raised by that many).
* Memory: ``RLIMIT_AS`` on every process (no swap is involved: address space is refused up front, so allocating "more
  than the machine has" fails at once with ``MemoryError``/``RuntimeError`` inside the student's code). This machine's
  cgroups belong to the host, so no cgroup is created; the total of a tree is bounded by
  ``memory x processes`` plus the tmpfs sizes. A deployment that can delegate a cgroup should add one (deploy/README).
* Time: nbclient enforces the per-cell limit inside; the parent enforces the per-submission wall clock by killing
  ``bwrap`` (``SIGKILL`` to its process group), which kills everything in the sandbox.
* Output: the parent reads at most ``max_output`` bytes of the record stream and discards the rest; the runner keeps at
  most a few tens of kB of each cell's output, so printing 100 MB (even one line) costs neither memory nor feedback.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BASE_UID = 62000  # slot k runs as uid/gid BASE_UID + k (no passwd entry needed) -- or the next free uid, see _claim_uid
MAX_UIDS = 4096  # uids BASE_UID .. BASE_UID + MAX_UIDS - 1 may be handed out
EXPORT_DIR = "/tmp/rnnkit-export"  # $RNNKIT_GRADING_EXPORT inside the sandbox
RUNNER = Path(__file__).with_name("runner.py")
_DEBUG = bool(os.environ.get("RNNKIT_SANDBOX_DEBUG"))  # show the sandbox's stderr (never in grading runs)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


@dataclass(frozen=True)
class Limits:
    cell_timeout: float = 60.0  # seconds per cell (nbclient, inside)
    submission_timeout: float = 600.0  # seconds for the whole notebook, start-up included (parent kills)
    memory: int = 4 * 2**30  # bytes of address space per process (RLIMIT_AS)
    processes: int = 256  # tasks (processes + threads) of the sandbox's uid (RLIMIT_NPROC)
    file_size: int = 256 * 2**20  # bytes of any one written file (RLIMIT_FSIZE)
    tmpfs: int = 512 * 2**20  # bytes of each of /tmp, $HOME and /dev/shm
    max_output: int = 64 * 2**20  # bytes of the record stream the parent keeps


@dataclass
class Result:
    records: dict[str, bytes] = field(default_factory=dict)  # last record of each name wins
    returncode: int | None = None
    killed: bool = False  # the parent stopped it at the submission wall clock
    stream_truncated: bool = False  # more than max_output bytes were sent
    seconds: float = 0.0
    uid: int | None = None  # the uid the sandbox ran as

    # the records' names are the runner's (rnnkit.grading.runner): decoded here, once
    def cell_records(self) -> dict[int, dict]:
        """The runner's record of each executed cell (``cell/<index>.json``) by cell index; an unreadable one is
        left out (the sandbox's bytes are untrusted)."""
        cells: dict[int, dict] = {}
        for name, data in self.records.items():
            if name.startswith("cell/") and name.endswith(".json"):
                try:
                    record = json.loads(data.decode())
                    if isinstance(record, dict):
                        cells[int(name[5:-5])] = record
                except (ValueError, TypeError, UnicodeDecodeError, RecursionError):
                    pass
        return cells

    def export(self, index: int | None, name: str) -> bytes | None:
        """The bytes of the export ``name`` that cell ``index`` left (``export/<index>/<name>.npz``), or None."""
        return None if index is None else self.records.get(f"export/{index}/{name}.npz")


def _mount_args(input_dir: Path, etc_dir: Path, limits: Limits) -> list[str]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "hosts", "nsswitch.conf"):
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    args += ["--ro-bind", str(etc_dir / "passwd"), "/etc/passwd", "--ro-bind", str(etc_dir / "group"), "/etc/group"]
    # scratch space first: a clone of the repository under /tmp (as CI may use) is bound on top of it below,
    # instead of being hidden by the tmpfs
    args += ["--dev", "/dev", "--proc", "/proc"]
    scratch = ("/tmp", "/home/student", "/dev/shm")
    for tmp in scratch:
        args += ["--size", str(limits.tmpfs), "--perms", "1777" if tmp != "/home/student" else "0755",
                 "--tmpfs", tmp]
    args += ["--chmod", "0777", "/home/student"]
    # the interpreter, the virtual environment and the rnnkit package (editable installs map it by path)
    import rnnkit

    package = Path(rnnkit.__file__).resolve().parent
    trees = sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), package}, key=lambda p: len(p.parts))
    made: set[Path] = {Path("/"), *(Path(t) for t in scratch), Path("/dev")}
    bound: list[Path] = []
    for tree in trees:
        if not any(tree.is_relative_to(b) for b in bound):  # a tree inside a bound one is already there
            for parent in reversed(tree.parents):
                if parent not in made and not any(parent.is_relative_to(b) for b in bound):
                    args += ["--perms", "0755", "--dir", str(parent)]
                    made.add(parent)
        args += ["--ro-bind", str(tree), str(tree)]
        bound.append(tree)
    args += ["--ro-bind", str(input_dir), "/input"]
    return args


def _environment() -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    return {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/student", "USER": "student",
        "LANG": "C.UTF-8", "TMPDIR": "/tmp", "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTER_PLATFORM_DIRS": "1", "IPYTHONDIR": "/tmp/ipython", "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib", "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
        "RNNKIT_GRADING_EXPORT": EXPORT_DIR, **({"RNNKIT_SANDBOX_DEBUG": "1"} if _DEBUG else {}),
        "NBGRADER_EXECUTION": "autograde", "RNNKIT_CACHE": "/tmp/rnnkit-cache",
        "RNNKIT_FUSED_KERNELS": "torch",  # no compiler runs on a student's behalf; grading needs no speed
    }


def _user_process_count(uid: int) -> int:
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return count


def command(input_dir: Path, notebook: str, uid: int, limits: Limits, etc_dir: Path) -> list[str]:
    """The full command line: prlimit -> bwrap -> setpriv -> python runner.py, running as ``uid`` (root only)."""
    root = os.geteuid() == 0
    uid = uid if root else os.getuid()
    nproc = limits.processes if root else limits.processes + _user_process_count(uid)
    cmd = ["prlimit", f"--as={limits.memory}", f"--nproc={nproc}", f"--fsize={limits.file_size}",
           "--nofile=1024", "--core=0", "--", "bwrap"]
    cmd += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "grader", "--clearenv"]
    if not root:
        cmd += ["--unshare-user", "--disable-userns"]
    for key, value in _environment().items():
        cmd += ["--setenv", key, value]
    cmd += _mount_args(input_dir, etc_dir, limits)
    cmd += ["--chdir", "/home/student"]
    if root:
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs"]
    cmd += ["--", sys.executable, "-I", str(RUNNER), "--input", "/input", "--notebook", notebook,
            "--workdir", "/home/student/work", "--cell-timeout", str(limits.cell_timeout)]
    return cmd


def _read_stream(pipe, limit: int, sink: list, state: dict) -> None:
    kept = 0
    while True:
        chunk = pipe.read(1 << 16)
        if not chunk:
            break
        if kept < limit:
            piece = chunk[: limit - kept]
            sink.append(piece)
            kept += len(piece)
            if len(piece) < len(chunk):
                state["truncated"] = True
        else:
            state["truncated"] = True  # keep draining so the sandbox never blocks on a full pipe


def parse_records(data: bytes) -> dict[str, bytes]:
    """Decode framed records; a truncated or garbled tail is dropped (everything before it is kept)."""
    records, pos = {}, 0
    while pos + 4 <= len(data):
        (name_len,) = struct.unpack_from(">I", data, pos)
        if name_len > 512 or pos + 4 + name_len + 8 > len(data):
            break
        try:
            name = data[pos + 4: pos + 4 + name_len].decode()
        except UnicodeDecodeError:
            break
        (size,) = struct.unpack_from(">Q", data, pos + 4 + name_len)
        start = pos + 12 + name_len
        if start + size > len(data):
            break
        records[name] = data[start: start + size]
        pos = start + size
    return records


def _lock_dir() -> Path:
    return Path(os.environ.get("RNNKIT_SANDBOX_LOCK_DIR") or ("/run/lock" if os.access("/run/lock", os.W_OK)
                                                              else tempfile.gettempdir()))


@contextlib.contextmanager
def _claim_uid(slot: int):
    """Hold uid ``BASE_UID + k`` for the first ``k >= slot`` (wrapping round) that no other sandbox on this machine
    holds and that runs no process. RLIMIT_NPROC counts a uid's tasks machine-wide, so two grading runs sharing a uid
    (two courses on one server, a test run beside ``make autograde``) would let one's fork bomb starve the other's
    kernels; an exclusive ``flock`` per uid, released when the sandbox ends (or its grader dies), prevents it."""
    if os.geteuid() != 0:  # the user-namespace fallback runs as the grader's own uid
        yield os.getuid()
        return
    folder = _lock_dir()
    for k in [*range(slot, MAX_UIDS), *range(0, min(slot, MAX_UIDS))]:
        uid = BASE_UID + k
        fh = open(folder / f"rnnkit-sandbox-uid-{uid}.lock", "a")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        if _user_process_count(uid):  # something else runs as this uid: its tasks would count against our limit
            fh.close()
            continue
        try:
            yield uid
        finally:
            fh.close()  # closing releases the lock
        return
    raise SandboxUnavailable(f"every sandbox uid {BASE_UID}..{BASE_UID + MAX_UIDS - 1} is in use on this machine")


def run(input_dir: str | Path, notebook: str, *, slot: int = 0, limits: Limits = Limits()) -> Result:
    """Execute ``input_dir/notebook`` in a fresh sandbox and return what its runner streamed back. ``slot`` picks the
    preferred uid (``BASE_UID + slot``); a uid another sandbox on this machine holds is skipped."""
    with _claim_uid(slot) as uid:
        return _run_as(Path(input_dir).resolve(), notebook, uid, limits)


def _run_as(input_dir: Path, notebook: str, uid: int, limits: Limits) -> Result:
    with tempfile.TemporaryDirectory(prefix="rnnkit-sandbox-etc-") as etc:
        etc_dir = Path(etc)
        (etc_dir / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\nstudent:x:{uid}:{uid}::/home/student:/bin/sh\n")
        (etc_dir / "group").write_text(f"root:x:0:\nstudent:x:{uid}:\n")
        os.chmod(etc_dir, 0o755)
        cmd = command(input_dir, notebook, uid, limits, etc_dir)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=None if _DEBUG else subprocess.DEVNULL, start_new_session=True, close_fds=True)
        chunks: list[bytes] = []
        state = {"truncated": False}
        reader = threading.Thread(target=_read_stream, args=(proc.stdout, limits.max_output, chunks, state),
                                  daemon=True)
        reader.start()
        killed = False
        try:
            proc.wait(timeout=limits.submission_timeout)
        except subprocess.TimeoutExpired:
            killed = True
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            reader.join(timeout=30)
        return Result(records=parse_records(b"".join(chunks)), returncode=proc.returncode, killed=killed,
                      stream_truncated=state["truncated"], seconds=time.monotonic() - started, uid=uid)


def check_available() -> None:
    """Raise :class:`SandboxUnavailable` with the reason when a sandbox cannot be started on this machine."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap` "
                                 "(Debian/Ubuntu), see deploy/README.md")
    for tool in ("prlimit", "setpriv"):
        if shutil.which(tool) is None:
            raise SandboxUnavailable(f"`{tool}` (util-linux) is not installed")
    probe = ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--proc", "/proc", "--dev", "/dev"]
    if os.geteuid() != 0:
        probe += ["--unshare-user"]
    done = subprocess.run(probe + ["true"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SandboxUnavailable(f"bubblewrap cannot create namespaces here: {done.stderr.strip()[:300]} "
                                 "(in a container, allow user namespaces or run the grader as root)")
