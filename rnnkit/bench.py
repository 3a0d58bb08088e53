r"""``python -m rnnkit.bench``: how fast is each rnnkit backend next to torch.nn, measured in one run.

For every device (CPU, and CUDA when present), cell (RNN tanh, LSTM, GRU) and hidden size it times, interleaved:

* ``reference`` -- an rnnkit layer with the readable per-step loop (:mod:`rnnkit.recurrence`);
* ``fused`` -- the same layer with the fused backend (:mod:`rnnkit.fused`);
* ``torch`` -- ``torch.nn.RNN/LSTM/GRU`` with the same weights (oneDNN's LSTM/RNN kernels on the CPU, cuDNN on a GPU);
* ``floor`` -- only the matrix products the fused backend performs (the input GEMM, one hidden GEMM per step and, for
  forward+backward, the backward GEMMs), with the same GEMM kernels: no gate arithmetic at all, and each step's product
  written into a reused buffer without adding anything to it (``torch.mm(..., out=)``, oneDNN's plain product, or
  MKL's gemm inside the compiled loop where the layer runs that), the cheapest way to call it
  (:mod:`rnnkit._bench_floor`). No implementation built from these products can beat it.

Each configuration runs ``warmup`` untimed rounds, then ``repeats`` rounds in which the backends take turns (rotating
order), so that load from other processes hits them alike; the table reports medians, their ratios to ``torch`` and
``fused / floor`` from the same run. The ratio to torch.nn depends on the CPU (how fast its GEMM libraries and
torch.nn's own kernels are there); ``fused / floor`` compares two runs of the same GEMMs and prices only what the fused
backend adds to them, so it is the figure to compare across machines. Peak memory of one forward+backward is
measured separately (see :func:`measure_memory`). Timings are for reading, never for asserting: no test checks them.
The book's page "How fast is rnnkit?" shows one run's JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm

from . import _kernels, layers
from ._bench_floor import floor_workload
from ._fused_chunks import release_scratch
from ._fused_gemm import gemm_choice

__all__ = ["BenchConfig", "run", "measure_memory", "format_table", "markdown_table", "fused_over_floor", "main"]

BACKENDS = ("reference", "fused", "torch", "floor")
MODES = ("RNN", "LSTM", "GRU")
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
PASSES = ("fwd", "fwd+bwd")


@dataclass
class BenchConfig:
    hidden: list[int] = field(default_factory=lambda: [128, 256, 512])  # hidden sizes; input size = hidden size
    batch: int = 64  # sequences per batch
    seq_len: int = 100  # time steps T
    repeats: int = 11  # timed rounds per configuration (the median is reported)
    warmup: int = 5  # untimed rounds first (the allocator's thresholds settle, oneDNN primitive caches, lazy imports)
    modes: list[str] = field(default_factory=lambda: list(MODES))  # cells
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))  # "torch" is always added: ratios need it
    devices: list[str] = field(default_factory=lambda: ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    fwd_only: bool = False  # time only the forward pass (under torch.no_grad)
    memory: bool = True  # measure peak memory of one forward+backward per configuration
    seed: int = 0  # weights and inputs


# ------------------------------------------------------------------------------------------------ what is timed
def _workload(mode: str, backend: str, H: int, cfg: BenchConfig, device: str):
    """``(fwd, fwd_bwd)``: two closures running one batch through ``backend``."""
    g = torch.Generator().manual_seed(cfg.seed)
    T, B = cfg.seq_len, cfg.batch
    x = torch.randn(T, B, H, generator=g).to(device).requires_grad_()  # (T, B, I) with I = H
    torch.manual_seed(cfg.seed)
    net = getattr(torch.nn, mode)(H, H, device=device)  # default init; the same weights for every backend
    if backend in ("reference", "fused"):
        ours = getattr(layers, mode)(H, H, device=device, backend=backend)
        ours.load_state_dict(net.state_dict())
        net = ours
    if backend == "floor":
        return floor_workload(net, x)
    params = list(net.parameters())

    def fwd():
        with torch.no_grad():
            return net(x)

    def fwd_bwd():
        out, _ = net(x)
        return torch.autograd.grad(out.sum(), [x, *params])

    return fwd, fwd_bwd


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ timing
def run(cfg: BenchConfig) -> list[dict]:
    """Time every (device, mode, hidden, backend, pass); returns one record per combination (times in ms)."""
    backends = list(dict.fromkeys([*cfg.backends, "torch"]))
    passes = ("fwd",) if cfg.fwd_only else PASSES
    units = len(cfg.devices) * len(cfg.modes) * len(cfg.hidden) * (cfg.warmup + cfg.repeats) * len(backends)
    records = []
    with tqdm(total=units * len(passes), desc="rnnkit.bench", unit="run", file=sys.stderr) as bar:
        for device in cfg.devices:
            for mode in cfg.modes:
                for H in cfg.hidden:
                    work = {b: _workload(mode, b, H, cfg, device) for b in backends}
                    times: dict[tuple[str, str], list[float]] = {(b, p): [] for b in backends for p in passes}
                    for r in range(cfg.warmup + cfg.repeats):
                        k = r % len(backends)
                        for b in backends[k:] + backends[:k]:  # rotate who goes first
                            for p in passes:
                                fn = work[b][0] if p == "fwd" else work[b][1]
                                _sync(device)
                                t0 = time.perf_counter()
                                fn()
                                _sync(device)
                                if r >= cfg.warmup:
                                    times[b, p].append((time.perf_counter() - t0) * 1e3)
                                bar.update()
                    del work
                    for p in passes:
                        base = statistics.median(times["torch", p])
                        floor = statistics.median(times["floor", p]) if "floor" in backends else None
                        for b in backends:
                            med = statistics.median(times[b, p])
                            rec = dict(device=device, mode=mode, hidden=H, backend=b, pass_=p,
                                       median_ms=round(med, 3), ratio_to_torch=round(med / base, 3))
                            if floor is not None:
                                rec["ratio_to_floor"] = round(med / floor, 3)  # machine-independent: same GEMMs
                            rec["times_ms"] = [round(t, 3) for t in times[b, p]]
                            records.append(rec)
    for rec in records:
        rec["pass"] = rec.pop("pass_")
    return records


# ------------------------------------------------------------------------------------------------ memory
MEMORY_METHOD = {
    "cpu": "peak of the bytes held by PyTorch's CPU allocator during one forward+backward, above what it held before "
           "(the allocation and free events of torch.profiler with profile_memory=True, summed in time order); "
           "includes the gradients returned and scratch kept for the next call",
    "cuda": "torch.cuda.max_memory_allocated() above memory_allocated() before one forward+backward",
}


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for the duration (C++ code writes there, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _held_peak_mib(fwd_bwd) -> float | None:
    """Peak MiB of tensor memory held during ``fwd_bwd()`` on the CPU above what was held before it (None if this
    PyTorch's profiler does not expose its memory events). Counting allocations, not the resident size, keeps the
    figure from depending on what glibc kept from earlier runs: resident sizes measured one configuration after
    another in one process varied by a third with the order."""
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's C++ side announces its start on stderr
        prof.start()
    try:
        grads = fwd_bwd()
        del grads
    finally:
        with _quiet_stderr():  # ... and its stop
            prof.stop()
    results: Any = getattr(prof.profiler, "kineto_results", None)
    try:  # + bytes allocated, - bytes freed, in time order
        steps = sorted((e.start_ns(), e.nbytes()) for e in results.events() if e.name() == "[memory]")
    except AttributeError:
        return None
    held = peak = 0
    for _, nbytes in steps:
        held += nbytes
        peak = max(peak, held)
    return round(peak / 2**20, 1)


def _cuda_peak_mib(fwd_bwd) -> float:
    """Peak MiB allocated on the current CUDA device during ``fwd_bwd()`` above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = fwd_bwd()
    torch.cuda.synchronize()
    del grads
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def _peaks(cfg: BenchConfig, backends: list[str], device: str) -> dict[str, float] | None:
    """Peak MiB per ``"mode/hidden/backend"`` on one device, or None where it cannot be measured."""
    peak_of = _cuda_peak_mib if device.startswith("cuda") else _held_peak_mib
    peaks = {}
    for mode in cfg.modes:
        for H in cfg.hidden:
            for b in backends:
                _, fwd_bwd = _workload(mode, b, H, cfg, device)
                fwd_bwd()  # warm-up: one-time caches are not the workload's memory ...
                release_scratch()  # ... but the fused backward's reused scratch is: it is allocated afresh
                gc.collect()
                peak = peak_of(fwd_bwd)
                if peak is None:
                    return None
                peaks[f"{mode}/{H}/{b}"] = peak
    return peaks


def measure_memory(cfg: BenchConfig) -> dict[str, dict[str, float]]:
    """``{device: {"mode/hidden/backend": MiB}}`` for one forward+backward; a device is left out if unmeasurable."""
    out: dict[str, dict[str, float]] = {}
    # the floor runs on random stand-ins, so its memory says nothing about an implementation: not measured
    backends = [b for b in dict.fromkeys([*cfg.backends, "torch"]) if b != "floor"]
    for device in cfg.devices:
        peaks = _peaks(cfg, backends, device)
        if peaks is None:
            print(f"rnnkit.bench: this PyTorch's profiler gives no memory events; {device} memory not measured",
                  file=sys.stderr)
        else:
            out[device] = peaks
    return out


# ------------------------------------------------------------------------------------------------ report
def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu=cpu, cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
        gemm_override=os.environ.get("RNNKIT_FUSED_GEMM", "auto"),
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )


def fused_over_floor(by_backend: dict[str, dict]) -> str:
    """``fused / floor`` for one configuration's records (by backend), from their medians; "-" without both."""
    if "fused" not in by_backend or "floor" not in by_backend:
        return "-"
    return f"{by_backend['fused']['median_ms'] / by_backend['floor']['median_ms']:.2f}"


def format_table(report: dict) -> str:
    """One text table: median ms per backend and its ratio to torch.nn, fused / floor, peak MiB; rows (device,
    pass, cell, hidden)."""
    recs = report["results"]
    backends = list(dict.fromkeys(r["backend"] for r in recs))
    mem = report.get("memory", {})
    mem_backends = [b for b in backends if any(k.endswith("/" + b) for m in mem.values() for k in m)]
    with_floor = "fused" in backends and "floor" in backends
    head = ["device", "pass", "cell", "H"] + [f"{b} ms (x torch)" for b in backends]
    head += ["fused/floor"] if with_floor else []
    head += [f"{b} MiB" for b in mem_backends]
    rows = []
    keys = list(dict.fromkeys((r["device"], r["pass"], r["mode"], r["hidden"]) for r in recs))
    for device, p, mode, H in keys:
        by_b = {r["backend"]: r for r in recs
                if (r["device"], r["pass"], r["mode"], r["hidden"]) == (device, p, mode, H)}
        row = [device, p, mode, str(H)]
        row += [f"{by_b[b]['median_ms']:.1f} ({by_b[b]['ratio_to_torch']:.2f})" if b in by_b else "-" for b in backends]
        row += [fused_over_floor(by_b)] if with_floor else []
        dev_mem = mem.get(device, {})
        row += [str(dev_mem.get(f"{mode}/{H}/{b}", "-")) if p == "fwd+bwd" else "" for b in mem_backends]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def markdown_table(report: dict, pass_: str = "fwd+bwd", device: str = "cpu") -> str:
    """A Markdown table of one pass: median ms and ratio to torch.nn per backend, fused / floor, peak MiB (the book
    shows it)."""
    recs = [r for r in report["results"] if r["pass"] == pass_ and r["device"] == device]
    backends = list(dict.fromkeys(r["backend"] for r in recs))
    mem = report.get("memory", {}).get(device, {}) if pass_ == "fwd+bwd" else {}
    mem_backends = [b for b in backends if any(k.endswith("/" + b) for k in mem)]
    with_floor = "fused" in backends and "floor" in backends
    head = ["cell", "H"] + [f"{b}: ms (x torch.nn)" for b in backends]
    head += ["fused / floor"] if with_floor else []
    head += [f"{b}: MiB" for b in mem_backends]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, H in dict.fromkeys((r["mode"], r["hidden"]) for r in recs):
        by_b = {r["backend"]: r for r in recs if (r["mode"], r["hidden"]) == (mode, H)}
        cells = [mode, str(H)] + [f"{by_b[b]['median_ms']:.1f} ({by_b[b]['ratio_to_torch']:.2f})" for b in backends]
        cells += [fused_over_floor(by_b)] if with_floor else []
        cells += [str(mem.get(f"{mode}/{H}/{b}", "-")) for b in mem_backends]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="python -m rnnkit.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=d.hidden, help="hidden sizes (input size = hidden)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed rounds before them")
    p.add_argument("--modes", nargs="+", choices=MODES, default=d.modes)
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=d.backends)
    p.add_argument("--device", nargs="+", default=d.devices,
                   help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--fwd-only", action="store_true", help="time only the forward pass (under torch.no_grad)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    a = p.parse_args(argv)
    for dev in a.device:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            p.error(f"--device {dev}: CUDA is not available on this machine")
    cfg = BenchConfig(hidden=a.hidden, batch=a.batch, seq_len=a.seq_len, repeats=a.repeats, warmup=a.warmup,
                      modes=a.modes, backends=a.backends, devices=a.device, fwd_only=a.fwd_only,
                      memory=not a.no_memory)
    for name in ("batch", "seq_len", "repeats"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    return cfg, a


def main(argv: list[str] | None = None) -> dict:
    cfg, a = _parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    report = dict(command="python -m rnnkit.bench " + " ".join(sys.argv[1:] if argv is None else argv),
                  **machine_info(), config=asdict(cfg))
    report["results"] = run(cfg)
    report["gemm_choice"] = gemm_choice()  # the fused backend's GEMM kernels, measured per shape
    report["elementwise"] = _kernels.status()  # the fused backend's element-wise steps on the CPU
    if cfg.memory and not cfg.fwd_only:
        report["memory"] = measure_memory(cfg)
        report["memory_method"] = {d: MEMORY_METHOD["cuda" if d.startswith("cuda") else "cpu"]
                                   for d in report["memory"]}
    print(f"rnnkit.bench  {report['date']}  {report['cpu']}  torch {report['torch']}  "
          f"{report['torch_threads']} threads  B={cfg.batch} T={cfg.seq_len}  median of {cfg.repeats}")
    print(format_table(report))
    if report["gemm_choice"]:
        print("fused GEMM kernels chosen by measurement (RNNKIT_FUSED_GEMM=" + report["gemm_override"] + "): "
              + ", ".join(f"{shape}: {path}" for shape, path in report["gemm_choice"].items()))
    print(f"fused element-wise steps (RNNKIT_FUSED_KERNELS={os.environ.get('RNNKIT_FUSED_KERNELS', 'auto')}): "
          + report["elementwise"])
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
        print(f"wrote {a.out}")
    return report


if __name__ == "__main__":
    main()
