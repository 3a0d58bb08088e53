"""The compiled element-wise steps (rnnkit/_kernels.py, _kernels.c): how they are chosen, built, cached and refused.
Their numbers are tested through the fused backend against torch.nn and an autograd loop (tests/test_fused.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch

from rnnkit import _kernels

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler (gcc) on this machine")


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process that has not loaded the kernels yet, with its own empty cache folder."""
    monkeypatch.setattr(_kernels, "_state", {})
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("RNNKIT_FUSED_KERNELS", raising=False)
    return tmp_path / "kernels"


@needs_gcc
def test_builds_once_into_the_cache_and_reports_itself(fresh, monkeypatch):
    assert _kernels.steps_for(torch.zeros(1)) is not None
    built = list(fresh.glob("kernels-*.so"))
    assert len(built) == 1
    assert _kernels.status().startswith("compiled C (-O3 -march=native")
    monkeypatch.setattr(_kernels, "_state", {})  # a new process: the cached module is used, nothing compiles

    run = subprocess.run

    def no_compiler(cmd, **kw):
        if "-c" in cmd or "-shared" in cmd:
            raise AssertionError(f"compiled again: {cmd}")
        return run(cmd, **kw)

    monkeypatch.setattr(_kernels.subprocess, "run", no_compiler)
    assert _kernels.steps_for(torch.zeros(1, dtype=torch.float64)) is not None


def test_without_a_compiler_pytorch_operators_run_and_say_why(fresh, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-rnnkit")
    assert _kernels.steps_for(torch.zeros(1)) is None
    assert "no C compiler" in _kernels.status()
    monkeypatch.setenv("RNNKIT_FUSED_KERNELS", "c")
    with pytest.raises(RuntimeError, match="RNNKIT_FUSED_KERNELS=c, but compiled kernels unavailable: no C compiler"):
        _kernels.steps_for(torch.zeros(1))


@needs_gcc
def test_a_cached_module_others_may_write_is_not_loaded(fresh, monkeypatch):
    assert _kernels.steps_for(torch.zeros(1)) is not None
    (built,) = fresh.glob("kernels-*.so")
    os.chmod(built, 0o666)
    monkeypatch.setattr(_kernels, "_state", {})
    assert _kernels.steps_for(torch.zeros(1)) is None
    assert "others may write it" in _kernels.status()


@needs_gcc
def test_a_failed_self_test_warns_and_falls_back(fresh, monkeypatch):
    monkeypatch.setattr(_kernels, "_self_test", lambda steps: "torch.float32 results differ by 0.5")
    with pytest.warns(RuntimeWarning, match="failed their self-test .* using PyTorch operators"):
        assert _kernels.steps_for(torch.zeros(1)) is None
    assert "self-test" in _kernels.status()


@needs_gcc
def test_the_self_test_can_fail(fresh):
    """The self-test compares against PyTorch: a kernel computing something else is caught."""
    _kernels.steps_for(torch.zeros(1))
    steps = _kernels._state["steps"]

    class Wrong:
        def lstm_fwd(self, B, H, pre, x, gates, cp, c, hp, h, keep):
            steps[torch.float32].lstm_fwd(B, H, pre, x, gates, hp, c, cp, h, keep)  # c_prev and h_prev swapped

    assert _kernels._self_test({torch.float32: steps[torch.float32]}) is None
    assert "differ" in _kernels._self_test({torch.float32: Wrong()})


def test_choice_is_checked_and_followed(fresh, monkeypatch):
    monkeypatch.setenv("RNNKIT_FUSED_KERNELS", "fast")
    with pytest.raises(ValueError, match="must be 'auto', 'c' or 'torch', got 'fast'"):
        _kernels.steps_for(torch.zeros(1))
    monkeypatch.setenv("RNNKIT_FUSED_KERNELS", "torch")
    assert _kernels.steps_for(torch.zeros(1)) is None
    assert _kernels.status() == "PyTorch operators (RNNKIT_FUSED_KERNELS=torch)"
    monkeypatch.setenv("RNNKIT_FUSED_KERNELS", "auto")
    for dtype in (torch.float16, torch.bfloat16, torch.int64):  # the kernels exist for float and double only
        assert _kernels.steps_for(torch.zeros(1, dtype=dtype)) is None


@needs_gcc
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 3e-7), (torch.float64, 1e-15)])
def test_tanh_and_sigmoid_are_accurate_everywhere(dtype, tol):
    """The kernels' tanh (a rational approximation in float) and sigmoid (through tanh) on a dense grid over the
    whole range, saturated arguments, infinities and NaN: within ``tol`` of float64's, NaN where the input is."""
    steps = _kernels.steps_for(torch.zeros(1, dtype=dtype))
    assert steps is not None, _kernels.status()
    grid = torch.linspace(-20, 20, 400_001, dtype=torch.float64)
    x = torch.cat([grid, torch.tensor([0.0, -0.0, 1e-30, 1e30, -1e30, float("inf"), -float("inf"), float("nan")],
                                      dtype=torch.float64)]).to(dtype)
    B = x.numel()
    h = torch.empty_like(x)
    steps.rnn_fwd(B, 1, 0, x.data_ptr(), None, h.data_ptr(), h.data_ptr(), None)  # h = tanh(x)
    want = torch.tanh(x.double())
    assert (h.double() - want)[:-1].abs().max().item() <= tol and h[-1].isnan()
    # sigmoid: the LSTM's input gate, read back from the gates it keeps for backward
    H, zeros = 1, torch.zeros(B, dtype=dtype)
    pre = torch.stack([x, zeros, zeros, zeros], 1).contiguous()  # (B, 4H) pre-activations (i, f, g, o)
    gates, c, hn = torch.empty_like(pre), torch.empty(B, dtype=dtype), torch.empty(B, dtype=dtype)
    steps.lstm_fwd(B, H, pre.data_ptr(), None, gates.data_ptr(), zeros.data_ptr(), c.data_ptr(), zeros.data_ptr(),
                   hn.data_ptr(), None)
    sig = torch.sigmoid(x.double())
    assert (gates[:, 0].double() - sig)[:-1].abs().max().item() <= tol and gates[-1, 0].isnan()


needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this PyTorch links no MKL")


@needs_gcc
@needs_mkl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 2, 7, 64])
def test_gemm_steps_are_the_loops_products(dtype, B):
    """The whole-sequence loops' product on each thread's rows (any batch, split unevenly or not at all) equals
    torch.mm, in its three forms: forward adds h W^T to a strided step, backward writes d W, and a forward's input
    projection writes b + x W^T into a strided step (every row, no stale values)."""
    steps = _kernels.steps_for(torch.zeros(1, dtype=dtype))
    assert steps is not None and steps.blas is not None, _kernels.status()
    g = torch.Generator().manual_seed(B)
    T, H, GH = 3, 5, 20
    h, w = torch.randn(T, B, H, generator=g, dtype=dtype), torch.randn(GH, H, generator=g, dtype=dtype)
    pre = torch.randn(T, B, 2 * GH, generator=g, dtype=dtype)  # the product goes into the first GH of 2GH columns
    want = pre.clone()
    want[..., :GH] += h @ w.t()
    steps.gemm_steps(T, B, h.data_ptr(), B * H, pre.data_ptr(), B * 2 * GH, *steps.product(w, True, H, 2 * GH, True))
    d, back = torch.randn(T, B, GH, generator=g, dtype=dtype), torch.full((T, B, H), float("nan"), dtype=dtype)
    steps.gemm_steps(T, B, d.data_ptr(), B * GH, back.data_ptr(), B * H, *steps.product(w, False, GH, H, False))
    b, proj = torch.randn(GH, generator=g, dtype=dtype), torch.full((T, B, 2 * GH), float("nan"), dtype=dtype)
    steps.gemm_steps(T, B, h.data_ptr(), B * H, proj.data_ptr(), B * 2 * GH,
                     *steps.product(w, True, H, 2 * GH, False, b))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(pre, want, atol=tol, rtol=tol) and torch.allclose(back, d @ w, atol=tol, rtol=tol)
    assert torch.allclose(proj[..., :GH], b + h @ w.t(), atol=tol, rtol=tol) and proj[..., GH:].isnan().all()


@needs_gcc
def test_a_failed_loop_self_test_keeps_the_per_step_kernels(fresh, monkeypatch):
    monkeypatch.setattr(_kernels, "_loop_self_test", lambda steps, dtype: f"{dtype} products differ by 0.5")
    x = torch.zeros(1)
    assert _kernels.steps_for(x) is not None and not _kernels.loop_available(x)
    assert "whole-sequence loops failed their self-test (torch.float64 products differ by 0.5)" in _kernels.status()
