"""Runs ONE prepared notebook inside the grading sandbox and streams what happened back to the grader.

This file is executed as a plain script inside the sandbox (``python -I .../runner.py``, see
:mod:`rnnkit.grading.sandbox`); it imports nothing from ``rnnkit`` so that it starts fast and so that nothing the
student's kernel does to ``rnnkit`` can reach it. Everything it reports is *untrusted*: it runs as the same
unprivileged user as the student's kernel, which could kill or imitate it. The grader therefore uses its records only
for exported check data (judged in the trusted parent) and for wording feedback, and treats a missing or garbled
stream as "nothing ran".

Protocol (stdout of the sandbox, one record after another, so a run killed half-way still delivers what it had)::

    4-byte big-endian name length | name (utf-8) | 8-byte big-endian data length | data

Record names: ``export/<cell index>/<name>.npz`` (a file that cell left in ``$RNNKIT_GRADING_EXPORT``; the folder is
emptied before each cell),
``cell/<index>.json`` (``{"status": "ok"|"error"|"timeout"|"died"|"skipped", "ename": ..., "outputs": [...],
"truncated": bytes dropped}``), ``done.json``.

Execution: nbclient runs the cells one by one with a per-cell time limit. A cell that times out is interrupted; if the
kernel does not answer a probe afterwards, or a cell kills the kernel (``os._exit``, a segfault, the memory limit), a
fresh kernel re-runs the notebook from the top *skipping every cell that killed or hung a kernel*, so one broken cell
costs only the checks that depend on it (at most ``MAX_RESTARTS`` times; the sandbox's wall clock bounds the rest).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import struct
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

MAX_RESTARTS = 3
PROBE_TIMEOUT = 5  # seconds a kernel gets to answer `pass` after an interrupted cell
CELL_TEXT_LIMIT = 20_000  # characters of stream/text output kept per cell
CELL_OUTPUTS_LIMIT = 40  # output items kept per cell
IMAGE_LIMIT = 2_000_000  # bytes of one base64 image kept
EXPORT_LIMIT = 32 * 2**20  # bytes of one export file sent
_EXPORT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}\.npz$")


class RecordWriter:
    """Framed records on a private duplicate of fd 1 (the kernel's own fd 1/2 go to /dev/null)."""

    def __init__(self, fd: int):
        self.fh = os.fdopen(fd, "wb", buffering=0)

    def send(self, name: str, data: bytes) -> None:
        raw = name.encode()
        try:
            self.fh.write(struct.pack(">I", len(raw)) + raw + struct.pack(">Q", len(data)) + data)
        except (BrokenPipeError, OSError):
            os._exit(3)  # the grader stopped listening: nothing left to do


class CappedClient(NotebookClient):
    """NotebookClient that keeps at most a bounded amount of each cell's output in memory."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped: dict[int, int] = {}
        self.timed_out = False

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content", {})
        size = len(json.dumps(content, default=str)) if msg.get("msg_type") != "stream" else len(
            content.get("text", ""))
        kept = sum(_output_size(o) for o in outs)
        if len(outs) >= CELL_OUTPUTS_LIMIT or kept + size > CELL_TEXT_LIMIT + IMAGE_LIMIT:
            if msg.get("msg_type") == "stream" and kept < CELL_TEXT_LIMIT:
                room = CELL_TEXT_LIMIT - kept
                text = content.get("text", "")
                msg = {**msg, "content": {**content, "text": text[:room]}}
                self.dropped[cell_index] = self.dropped.get(cell_index, 0) + len(text) - room
                return super().output(outs, msg, display_id, cell_index)
            self.dropped[cell_index] = self.dropped.get(cell_index, 0) + size
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def _async_handle_timeout(self, timeout, cell=None):
        self.timed_out = True
        kill_strays({os.getpid(), os.getppid(), Runner.kernel_pid(self)})  # a fork bomb first, then interrupt
        return await super()._async_handle_timeout(timeout, cell)


def kill_strays(keep: set[int]) -> int:
    """SIGKILL every process of the sandbox except ``keep`` (and pid 1, bubblewrap's init): background processes
    never outlive the cell that started them, so a fork bomb is gone as soon as its cell is over."""
    killed = 0
    for _round in range(3):  # a bomb may fork between the listing and the kill
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in keep and int(entry) != 1:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
    return killed


def _output_size(out) -> int:
    if out.get("output_type") == "stream":
        return len(out.get("text", ""))
    return len(json.dumps(out, default=str))


class Runner:
    def __init__(self, nb, workdir: str, export_dir: str, cell_timeout: float, writer: RecordWriter):
        self.nb = nb
        self.workdir = workdir
        self.export_dir = export_dir
        self.cell_timeout = cell_timeout
        self.writer = writer
        self.sent: dict[str, tuple] = {}
        self.why_skipped: dict[int, str] = {}  # cell index -> "died" | "hung": why later passes skip it

    def client(self) -> CappedClient:
        return CappedClient(
            self.nb, timeout=int(self.cell_timeout), startup_timeout=120, kernel_name="python3",
            allow_errors=True, interrupt_on_timeout=True, record_timing=False,
            error_on_timeout={"ename": "CellTimeout", "evalue": f"cell ran past {self.cell_timeout:g} s",
                              "traceback": []},
            resources={"metadata": {"path": self.workdir}})

    def clear_exports(self) -> None:
        for name in os.listdir(self.export_dir):
            try:
                os.unlink(os.path.join(self.export_dir, name))
            except OSError:
                pass

    def send_exports(self, index: int) -> None:
        """Send what the cell ``index`` exported (the export folder is emptied before each cell, so a result
        counts only for the cell whose execution wrote it)."""
        try:
            names = sorted(os.listdir(self.export_dir))
        except OSError:
            return
        for name in names:
            if not _EXPORT_NAME.match(name):
                continue
            path = os.path.join(self.export_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    key = (st.st_size, st.st_mtime_ns, st.st_ino)
                    if self.sent.get(name) == key or not (st.st_mode & 0o170000 == 0o100000):
                        continue
                    if st.st_size > EXPORT_LIMIT:
                        continue
                    data = fh.read(EXPORT_LIMIT + 1)
            except OSError:
                continue
            self.sent[name] = key
            self.writer.send(f"export/{index}/{name}", data)

    def report(self, index: int, status: str, cell, dropped: int = 0, ename: str | None = None) -> None:
        outputs = cell.get("outputs", []) if cell.cell_type == "code" else []
        record = {"status": status, "ename": ename, "outputs": outputs, "truncated": dropped,
                  "why": self.why_skipped.get(index)}
        self.writer.send(f"cell/{index}.json", json.dumps(record, default=str).encode())

    def run(self) -> None:
        skip: set[int] = set()
        for attempt in range(MAX_RESTARTS + 1):
            restart = self.run_once(skip, attempt)
            if not restart:
                break
        self.writer.send("done.json", json.dumps({"restarts": attempt, "skipped": sorted(skip)}).encode())

    def run_once(self, skip: set[int], attempt: int) -> bool:
        """One pass over the notebook with a fresh kernel; True when a cell killed or hung the kernel."""
        for cell in self.nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        client = self.client()
        try:
            with client.setup_kernel():
                for index, cell in enumerate(self.nb.cells):
                    if cell.cell_type != "code":
                        continue
                    if index in skip:
                        self.report(index, "skipped", cell)
                        continue
                    client.timed_out = False
                    self.clear_exports()
                    self.sent.clear()
                    try:
                        client.execute_cell(cell, index)
                    except DeadKernelError:
                        skip.add(index)
                        self.why_skipped[index] = "died"
                        self.report(index, "died", cell, client.dropped.get(index, 0))
                        self.send_exports(index)
                        return attempt < MAX_RESTARTS
                    except CellTimeoutError:  # only if interrupting did not help at all
                        client.timed_out = True
                    kill_strays({os.getpid(), os.getppid(), self.kernel_pid(client)})
                    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                    ename = errors[-1].get("ename") if errors else None
                    status = "timeout" if client.timed_out else ("error" if errors else "ok")
                    self.send_exports(index)
                    self.report(index, status, cell, client.dropped.get(index, 0), ename)
                    if client.timed_out:
                        skip.add(index)  # a later pass (after some other cell kills the kernel) skips it
                        self.why_skipped[index] = "timeout"
                        if not self.responsive(client, index):
                            self.why_skipped[index] = "hung"
                            return attempt < MAX_RESTARTS
        except (DeadKernelError, RuntimeError, TimeoutError) as exc:  # kernel failed to start or to shut down
            self.writer.send("kernel-error.json", json.dumps({"error": type(exc).__name__,
                                                              "message": str(exc)[:300]}).encode())
        return False

    @staticmethod
    def kernel_pid(client) -> int:
        try:
            return int(client.km.provisioner.process.pid)
        except (AttributeError, TypeError, ValueError):
            return -1

    def responsive(self, client: CappedClient, index: int) -> bool:
        """After an interrupted cell: does the kernel still answer? (A loop that ignores SIGINT does not.)"""
        probe = nbformat.v4.new_code_cell("pass")
        saved, client.timeout = client.timeout, PROBE_TIMEOUT
        client.timed_out = False
        cell = self.nb.cells[index]
        try:
            client.execute_cell(probe, index)  # nbclient stores the probe at `index`: put the cell back after
        except (DeadKernelError, CellTimeoutError):
            return False
        finally:
            client.timeout = saved
            self.nb.cells[index] = cell
        return not client.timed_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="read-only folder holding the prepared submission")
    parser.add_argument("--notebook", required=True, help="notebook file name inside --input")
    parser.add_argument("--workdir", required=True, help="writable working folder (tmpfs) to copy the input into")
    parser.add_argument("--cell-timeout", type=float, required=True)
    args = parser.parse_args()

    writer = RecordWriter(os.dup(1))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    if not os.environ.get("RNNKIT_SANDBOX_DEBUG"):
        os.dup2(devnull, 2)

    shutil.copytree(args.input, args.workdir, dirs_exist_ok=True, symlinks=True)
    export_dir = os.environ["RNNKIT_GRADING_EXPORT"]
    os.makedirs(export_dir, exist_ok=True)
    nb = nbformat.read(os.path.join(args.workdir, args.notebook), as_version=4)
    started = time.monotonic()
    Runner(nb, args.workdir, export_dir, args.cell_timeout, writer).run()
    writer.send("timing.json", json.dumps({"seconds": time.monotonic() - started}).encode())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
