r"""Compiled element-wise steps for the fused backend: ``_kernels.c``, built with the system C compiler at first use.

A fused time step is one matrix product and a handful of element-wise operations. At the sizes of a course
(B=64, H=128) each PyTorch operator costs a few microseconds of dispatch and a full read and write of the step, so
the element-wise half cost as much as the product. ``_kernels.c`` does that half in one pass per step, vectorised
(a rational tanh in float, glibc's libmvec in double) and split over PyTorch's own OpenMP threads, and is a small
Python extension module (each kernel a ``METH_FASTCALL`` function of integer addresses: ctypes would cost a
microsecond a call). It needs no PyTorch headers, so it compiles in about a second (``gcc -O3 -march=native``); the
module is cached per source, compiler, Python and CPU under ``$RNNKIT_CACHE/kernels`` (default
``~/.cache/rnnkit/kernels``).

Each kernel also runs **a whole run of steps in one call** (``seq_*``): every thread takes the same rows of every
step and computes them start to end, the step's matrix product of its rows included, through the BLAS PyTorch links
(MKL's ``sgemm_``/``dgemm_``, looked up in ``libtorch_cpu``). A batch row's step needs only that row's previous
state, so the threads never wait for each other and no step pays for Python or for waking threads. Whether a layer
runs these loops or one call per step (with oneDNN's or ``torch.addmm``'s product) is measured per shape
(:func:`rnnkit._fused_gemm.gemm_path`).

``RNNKIT_FUSED_KERNELS`` chooses: ``auto`` (default) uses the compiled steps where they build and pass a self-test,
else PyTorch operators; ``torch`` always uses PyTorch operators; ``c`` requires the compiled steps (an error if they
are unavailable). Only CPU tensors of float32 or float64 use them; CUDA always runs PyTorch operators.
:func:`status` says which is in use and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import itertools
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["Steps", "Column", "fixed", "stepping", "alternating", "steps_for", "loop_available", "status"]

SOURCE = Path(__file__).with_name("_kernels.c")
KEEP_BUILDS = 8  # cached modules kept per folder, the newest
FLAGS = ["-O3", "-march=native", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd"]
KERNELS = ("rnn_fwd", "rnn_bwd", "lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd", "grurb_gates", "grurb_out",
           "grurb_bwd1", "grurb_bwd2")

SEQ_KERNELS = ("rnn_fwd", "rnn_bwd", "lstm_fwd", "lstm_bwd", "gru_fwd", "gru_bwd")  # those with a seq_ loop

_state: dict[str, object] = {}  # "lib": the loaded library or None, "why": the reason it is not used


class Steps:
    """The compiled step functions for one dtype: ``steps.lstm_fwd(B, H, *addresses)``; see ``_kernels.c``."""

    rnn_fwd: Callable[..., None]
    rnn_bwd: Callable[..., None]
    lstm_fwd: Callable[..., None]
    lstm_bwd: Callable[..., None]
    gru_fwd: Callable[..., None]
    gru_bwd: Callable[..., None]
    grurb_gates: Callable[..., None]
    grurb_out: Callable[..., None]
    grurb_bwd1: Callable[..., None]
    grurb_bwd2: Callable[..., None]

    seq_rnn_fwd: Callable[..., None]
    seq_rnn_bwd: Callable[..., None]
    seq_lstm_fwd: Callable[..., None]
    seq_lstm_bwd: Callable[..., None]
    seq_gru_fwd: Callable[..., None]
    seq_gru_bwd: Callable[..., None]
    gemm_steps: Callable[..., None]
    max_threads: Callable[[], int]
    blas: int | None  # the address of the BLAS's gemm for this dtype; None: no whole-sequence loops

    def __init__(self, module: ModuleType, suffix: str, blas: int | None):
        for name in KERNELS:
            setattr(self, name, getattr(module, f"{name}_{suffix}"))
        for name in SEQ_KERNELS:
            setattr(self, f"seq_{name}", getattr(module, f"seq_{name}_{suffix}"))
        self.gemm_steps = getattr(module, f"gemm_steps_{suffix}")
        self.max_threads = module.max_threads  # rows of a backward's bias sums (GradSums.bias_rows), at call time
        self.blas = blas

    def product(self, w: Tensor, transposed: bool, lda: int, ldc: int, accumulate: bool,
                bias: Tensor | None = None) -> tuple[int, ...]:
        """A step's product for :meth:`run` and ``gemm_steps``: ``C (B, n) (+)= A (B, k) @ (w.T if transposed else
        w)``, or ``C = bias + A @ ...`` with a ``bias (n,)`` (not with ``accumulate``), ``A``'s rows ``lda`` and
        ``C``'s ``ldc`` elements apart; ``w`` and ``bias`` contiguous, kept alive by the caller."""
        if self.blas is None:
            raise RuntimeError(f"no whole-sequence loops: {_state.get('why_loop')}")
        n, k = (w.shape[0], w.shape[1]) if transposed else (w.shape[1], w.shape[0])
        return (self.blas, w.data_ptr(), int(transposed), n, k, w.stride(0), lda, ldc, int(accumulate),
                0 if bias is None else bias.data_ptr())

    @staticmethod
    def run(seq: Callable[..., None], columns: list[Column], steps: int, product_first: bool,
            product: tuple[int, ...], inputs: tuple[int, ...] | None = None) -> None:
        """Run ``seq`` (a ``seq_*`` kernel) over ``steps`` steps whose arguments are ``columns``: those of the
        kernel's one-step form, then the addresses of the product's ``A`` and ``C``, and with an ``inputs`` product
        (a forward's input projection, made step by step) the addresses of its ``A`` and ``C`` (see
        ``_kernels.c``)."""
        if steps > 0:
            table = ctypes.create_string_buffer(struct.pack(f"{5 * len(columns)}q",
                                                            *itertools.chain.from_iterable(columns)))
            seq(ctypes.addressof(table), steps, product_first, *product, *(inputs or NO_PRODUCT))


Column = tuple[int, int, int, int, int]  # (kind, a, b, c, e): one argument of a compiled run, step by step
NO_PRODUCT = (0,) * 10  # a run without an input product (GEMM_INTS zeros in _kernels.c)


def fixed(value: int) -> Column:
    """The same argument at every step of a run."""
    return (0, value, 0, 0, -1)


def stepping(start: int, step: int, at: int = -1, value: int = 0) -> Column:
    """``start + s * step`` at step ``s`` of a run (``value`` instead at step ``at``)."""
    return (1, start, step, value, at)


def alternating(even: int, odd: int, at: int = -1, value: int = 0) -> Column:
    """``even`` at even steps, ``odd`` at odd steps (``value`` instead at step ``at``): two buffers used in turn."""
    return (2, even, odd, value, at)


def _cache_dir() -> Path:
    root = os.environ.get("RNNKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rnnkit")
    return Path(root) / "kernels"


@functools.cache  # torch's runtime is loaded with torch, once
def _torch_libgomp() -> Path | None:
    """The OpenMP runtime PyTorch runs on, if any: linking against that very file makes the kernels share its
    threads (a second runtime would fight PyTorch's spinning threads for the same cores)."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = {line.split()[-1] for line in maps.splitlines() if re.search(r"/libgomp[^/]*\.so", line)}
    return Path(found.pop()) if len(found) == 1 else None


def _cpu_signature() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        return " ".join(sorted(set(re.findall(r"^(?:model name|flags)\s*:\s*(.*)$", info, re.M))))
    except OSError:
        return platform.processor()


def _build() -> Path:
    """Compile ``_kernels.c`` (or reuse the cached build); returns the extension module's path."""
    if platform.system() != "Linux":
        raise OSError(f"compiled kernels are built on Linux only (this is {platform.system()})")
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        raise OSError("no C compiler (gcc, or $CC) on PATH")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    gomp = _torch_libgomp()
    compile_flags = FLAGS + ["-I" + sysconfig.get_paths()["include"]] + (["-fopenmp"] if gomp else [])
    link = ["-lmvec", "-lm"] + ([f"-L{gomp.parent}", f"-l:{gomp.name}", f"-Wl,-rpath,{gomp.parent}"] if gomp else [])
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(compile_flags + link).encode(),
                                      _cpu_signature().encode(), sys.version.encode()])).hexdigest()[:20]
    folder = _cache_dir()
    target = folder / f"kernels-{key}.so"
    if target.exists():
        info = target.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise OSError(f"{target} is not this user's own file (or others may write it): not loaded")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        obj, lib = Path(tmp) / "k.o", Path(tmp) / "k.so"
        # compile and link apart: linking with the compile flags' relatives (-ffast-math and the like) can pull in
        # start-up code that changes the floating-point mode of the whole process
        for cmd in ([cc, *compile_flags, "-c", str(SOURCE), "-o", str(obj)], [cc, "-shared", str(obj), "-o", str(lib),
                                                                                *link]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                raise OSError(f"{' '.join(cmd[:2])} ... failed: {(done.stderr or done.stdout).strip()[-400:]}")
        os.replace(lib, target)  # atomic: a concurrent build of the same key writes the same bytes
    for old in sorted(folder.glob("kernels-*.so"), key=lambda p: p.stat().st_mtime)[:-KEEP_BUILDS]:
        old.unlink(missing_ok=True)  # builds of older sources, compilers or Pythons
    return target


@functools.cache
def _blas() -> dict[torch.dtype, int]:
    """The addresses of ``sgemm_`` and ``dgemm_`` in the MKL that PyTorch links (LP64: 32-bit sizes), or {} (no
    MKL, or a build that does not export them)."""
    if not torch.backends.mkl.is_available():
        return {}
    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return {dtype: int(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0)
                for dtype, name in ((torch.float32, "sgemm_"), (torch.float64, "dgemm_"))}
    except (OSError, AttributeError):
        return {}


def _loop_self_test(s: Steps, dtype: torch.dtype) -> str | None:
    """Why ``gemm_steps`` disagrees with ``torch.mm`` (the three product forms, rows split over threads), or None."""
    g = torch.Generator().manual_seed(1)
    a, w = torch.randn(2, 5, 7, generator=g, dtype=dtype), torch.randn(6, 7, generator=g, dtype=dtype)
    c = torch.randn(2, 5, 6, generator=g, dtype=dtype)
    want = c + a @ w.t()
    s.gemm_steps(2, 5, a.data_ptr(), 35, c.data_ptr(), 30, *s.product(w, True, 7, 6, True))
    d, back = torch.randn(2, 5, 6, generator=g, dtype=dtype), torch.empty(2, 5, 7, dtype=dtype)
    s.gemm_steps(2, 5, d.data_ptr(), 30, back.data_ptr(), 35, *s.product(w, False, 6, 7, False))
    bias, biased = torch.randn(6, generator=g, dtype=dtype), torch.full((2, 5, 6), float("nan"), dtype=dtype)
    s.gemm_steps(2, 5, a.data_ptr(), 35, biased.data_ptr(), 30, *s.product(w, True, 7, 6, False, bias))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for got, ref in ((c, want), (back, d @ w), (biased, bias + a @ w.t())):
        if not torch.allclose(got, ref, atol=tol, rtol=tol):
            return f"{dtype} products differ from torch.mm's by {(got - ref).abs().max().item():.3g}"
    return None


def _self_test(steps: dict[torch.dtype, Steps]) -> str | None:
    """Why the compiled steps disagree with PyTorch's operators on a small LSTM step, or None if they agree."""
    g = torch.Generator().manual_seed(0)
    for dtype, s in steps.items():
        B, H = 3, 37
        pre = torch.randn(B, 4 * H, generator=g, dtype=dtype) * 4
        cp, hp = torch.randn(B, H, generator=g, dtype=dtype), torch.randn(B, H, generator=g, dtype=dtype)
        i, f, gg, o = pre.chunk(4, 1)
        i, f, gg, o = i.sigmoid(), f.sigmoid(), gg.tanh(), o.sigmoid()
        want_c = f * cp + i * gg
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        part = torch.randn(B, 4 * H, generator=g, dtype=dtype)
        # pre-activations whole, or as product + projection; the gates kept for backward, or not (inference)
        for first, second, keep_gates in ((pre, None, True), (pre - part, part, True), (pre, None, False)):
            gates, c, h = torch.zeros_like(pre), torch.empty_like(cp), torch.empty_like(hp)
            s.lstm_fwd(B, H, first.data_ptr(), None if second is None else second.data_ptr(),
                       gates.data_ptr() if keep_gates else None, *(t.data_ptr() for t in (cp, c, hp, h)), None)
            kept = torch.cat([i, f, gg, o], 1) if keep_gates else torch.zeros_like(pre)
            for got, want in ((gates, kept), (c, want_c), (h, o * want_c.tanh())):
                if not torch.allclose(got, want, atol=tol, rtol=tol):
                    return f"{dtype} results differ from PyTorch's by {(got - want).abs().max().item():.3g}"
    return None


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_rnnkit_kernels", path)
    if spec is None or spec.loader is None:
        raise OSError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load() -> ModuleType | None:
    if "lib" not in _state:
        _state["lib"], _state["why"] = None, ""
        try:
            lib = _import(_build())
            blas = _blas()
            steps = {dtype: Steps(lib, name, blas.get(dtype) or None)
                     for dtype, name in ((torch.float32, "float"), (torch.float64, "double"))}
            problem = _self_test(steps)
            _state["why_loop"] = "" if blas else "PyTorch links no MKL whose gemm rnnkit can call"
            for dtype, s in steps.items():
                wrong = None if s.blas is None else _loop_self_test(s, dtype)
                if wrong is not None:
                    s.blas, _state["why_loop"] = None, f"the whole-sequence loops failed their self-test ({wrong})"
            if problem is None:
                _state["lib"], _state["steps"] = lib, steps
            else:
                _state["why"] = f"the compiled kernels failed their self-test ({problem})"
                warnings.warn(f"rnnkit fused backend: {_state['why']}; using PyTorch operators", RuntimeWarning,
                              stacklevel=3)
        except (OSError, ImportError, subprocess.SubprocessError, AttributeError) as err:
            _state["why"] = f"compiled kernels unavailable: {err}"
    return _state["lib"]  # type: ignore[return-value]


def steps_for(x: Tensor) -> Steps | None:
    """The compiled steps for tensors like ``x``, or None where PyTorch operators run the step (see module doc)."""
    choice = os.environ.get("RNNKIT_FUSED_KERNELS", "auto").lower()
    if choice not in ("auto", "c", "torch"):
        raise ValueError(f"RNNKIT_FUSED_KERNELS must be 'auto', 'c' or 'torch', got {choice!r}")
    if choice == "torch" or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    if _load() is None:
        if choice == "c":
            raise RuntimeError(f"RNNKIT_FUSED_KERNELS=c, but {_state['why']}")
        return None
    return _state["steps"][x.dtype]  # type: ignore[index]


def loop_available(x: Tensor) -> bool:
    """Whether tensors like ``x`` can run the whole-sequence loops (compiled steps and the BLAS's gemm)."""
    steps = steps_for(x)
    return steps is not None and steps.blas is not None


def status() -> str:
    """Which element-wise steps the fused backend runs on the CPU, and why: for the bench and bug reports."""
    choice = os.environ.get("RNNKIT_FUSED_KERNELS", "auto").lower()
    if choice == "torch":
        return "PyTorch operators (RNNKIT_FUSED_KERNELS=torch)"
    if _load() is None:
        return f"PyTorch operators ({_state['why']})"
    threads = "OpenMP threads shared with PyTorch" if _torch_libgomp() else "one thread"
    steps: Steps = _state["steps"][torch.float32]  # type: ignore[index]
    loops = ("whole-sequence loops available (MKL gemm per thread's rows)" if steps.blas is not None
             else f"no whole-sequence loops: {_state['why_loop']}")
    return f"compiled C ({' '.join(FLAGS[:2])}, rational tanh in float, {threads}); {loops}"
