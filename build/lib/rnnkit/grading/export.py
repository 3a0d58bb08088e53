r"""Plain-data export of what a function returned on a spec's cases: the one format that
:mod:`rnnkit.grading.check` writes, :mod:`rnnkit.grading.judge` reads and :mod:`rnnkit.grading.fixtures` stores.

An export is a flat ``dict[str, numpy.ndarray]`` saved with :func:`numpy.savez` and loaded with
``allow_pickle=False``: only numbers, booleans and unicode strings, never Python objects. Keys::

    "spec"             str    the spec's name
    "format"           str    EXPORT_FORMAT
    "cases"            int64  number of cases
    "c{i}.status"      str    "ok" (the call returned) or "error" (it raised)
    "c{i}.error"       str    "ExceptionType: message" of the student's own exception (status "error" only)
    "c{i}.structure"   str    nesting of the returned value, e.g. "(T,(T,T))" for ``(output, (h, c))``
    "c{i}.l{j}.type"   str    leaf j: "torch.Tensor", "float", "int", "bool", "str", "None" or "other:<type>"
    "c{i}.l{j}.dtype"  str    tensors: "torch.float32", ...
    "c{i}.l{j}.shape"  int64  tensors: the shape
    "c{i}.l{j}.value"  array  tensors, numbers, strings: the values (tensors keep their numpy dtype)
    "function"         str    the student's function's name (function specs, guarded runs)
    "c{i}.changed"     str[]  arguments the call modified in place (guarded runs)
    "c{i}.guard.*"     arrays the guard's record of forbidden calls (:meth:`rnnkit.grading.guard.CallRecord.export`)

Structure letters: ``T`` tensor, ``f`` float, ``i`` int, ``b`` bool, ``s`` str, ``n`` None, ``?`` anything else;
``(a,b)`` a tuple or list, ``{k:a,m:b}`` a dict with sorted string keys. Exact types: a ``float`` subclass or a
``Tensor`` subclass is "other", so an object that claims to equal everything has nothing to claim with.
"""
from __future__ import annotations

import inspect
import io
import os
import zipfile
from typing import Any, overload

import numpy as np
import torch

from . import guard

EXPORT_FORMAT = "rnnkit-grading-2"
MAX_UNPACKED = 64 * 2**20  # an export whose arrays would unpack to more is refused (zip bombs)
MAX_ENTRIES = 100_000
MAX_ELEMENTS = 1_000_000  # values of a bigger tensor are not exported (its type and shape still are)
MAX_LEAVES = 256
MAX_DEPTH = 6
MAX_TEXT = 400  # characters kept of an exception message

_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_LEAF_LETTERS = {"torch.Tensor": "T", "float": "f", "int": "i", "bool": "b", "str": "s", "None": "n"}


def _type_name(obj: Any) -> str:
    t = type(obj)
    if t in _TENSOR_TYPES:
        return "torch.Tensor"
    if obj is None:
        return "None"
    if t in (float, int, bool, str):
        return t.__name__
    return f"other:{t.__module__}.{t.__qualname__}"[:120]


def _text(value: str) -> np.ndarray:
    return np.array(str(value)[:MAX_TEXT])


def _tensor_values(t: torch.Tensor) -> np.ndarray | None:
    t = t.detach()
    if t.numel() > MAX_ELEMENTS or t.is_complex() or t.layout != torch.strided:
        return None
    t = t.to("cpu").resolve_conj().resolve_neg()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)  # numpy has no bfloat16; the dtype string keeps the truth
    return np.array(t.numpy(), copy=True)


def _flatten(obj: Any, leaves: list, depth: int = 0) -> str:
    """Append obj's leaves to ``leaves`` and return its structure string."""
    if len(leaves) >= MAX_LEAVES or depth > MAX_DEPTH:
        leaves.append(("other:too-deep-or-too-many", None))
        return "?"
    t = type(obj)
    if t in (tuple, list) or (isinstance(obj, tuple) and hasattr(obj, "_fields")):  # namedtuples count as tuples
        return "(" + ",".join(_items(list(obj[:MAX_LEAVES + 1]), leaves, depth)) + ")"
    if t is dict:
        if not all(type(k) is str for k in obj):
            leaves.append(("other:dict-with-non-string-keys", None))
            return "?"
        keys = sorted(obj)[:MAX_LEAVES + 1]
        # _items stops early (with one "?") at MAX_LEAVES, so it may return fewer parts than there are keys
        parts = _items([obj[k] for k in keys], leaves, depth)
        return "{" + ",".join(f"{k}:{v}" for k, v in zip(keys, parts, strict=False)) + "}"
    name = _type_name(obj)
    leaves.append((name, obj))
    return _LEAF_LETTERS.get(name, "?")


def _items(items: list, leaves: list, depth: int) -> list[str]:
    """Structure strings of a container's items, stopping (with one "?" marker) once MAX_LEAVES is reached."""
    parts = []
    for item in items:
        if len(leaves) >= MAX_LEAVES:
            leaves.append(("other:too-many-items", None))
            parts.append("?")
            break
        parts.append(_flatten(item, leaves, depth + 1))
    return parts


def _leaf_arrays(prefix: str, name: str, obj: Any) -> dict[str, np.ndarray]:
    out = {f"{prefix}.type": _text(name)}
    if name == "torch.Tensor":
        out[f"{prefix}.dtype"] = _text(str(obj.dtype))
        out[f"{prefix}.shape"] = np.array(tuple(obj.shape), dtype=np.int64)
        values = _tensor_values(obj)
        if values is not None:
            out[f"{prefix}.value"] = values
    elif name == "float":
        out[f"{prefix}.value"] = np.array(obj, dtype=np.float64)
    elif name == "bool":
        out[f"{prefix}.value"] = np.array(obj, dtype=np.bool_)
    elif name == "int":
        if -(2**63) <= obj < 2**63:
            out[f"{prefix}.value"] = np.array(obj, dtype=np.int64)
    elif name == "str":
        out[f"{prefix}.value"] = _text(obj)
    return out


def export_value(case: int, obj: Any) -> dict[str, np.ndarray]:
    """The arrays describing one case's returned value ``obj``."""
    leaves: list = []
    structure = _flatten(obj, leaves)
    out = {f"c{case}.status": _text("ok"), f"c{case}.structure": _text(structure)}
    for j, (name, leaf) in enumerate(leaves):
        out.update(_leaf_arrays(f"c{case}.l{j}", name, leaf))
    return out


def export_error(case: int, exc: BaseException) -> dict[str, np.ndarray]:
    """The arrays recording that one case raised ``exc`` (the student's own exception: safe to show them)."""
    try:
        message = str(exc)
    except Exception:  # an exception whose __str__ raises
        message = "<unprintable message>"
    return {f"c{case}.status": _text("error"), f"c{case}.error": _text(f"{type(exc).__name__}: {message}")}


def header(spec_name: str, num_cases: int) -> dict[str, np.ndarray]:
    return {"spec": _text(spec_name), "format": _text(EXPORT_FORMAT), "cases": np.array(num_cases, dtype=np.int64)}


def save(exported: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write an export as an uncompressed ``.npz`` (atomically: a reader never sees half a file)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    arrays: dict[str, Any] = exported  # numpy's stubs type **kwds as bool too (savez's allow_pickle)
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def load(source: str | os.PathLike | bytes) -> dict[str, np.ndarray]:
    """Read an export without unpickling anything (``allow_pickle=False``); ``source`` is a path or the bytes.

    Untrusted bytes: an archive that would unpack to more than MAX_UNPACKED bytes or MAX_ENTRIES arrays (a zip
    bomb) is refused with ValueError before anything is decompressed."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with zipfile.ZipFile(stream) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES or sum(i.file_size for i in infos) > MAX_UNPACKED:
            raise ValueError("export too large")
    if isinstance(stream, io.BytesIO):
        stream.seek(0)
    with np.load(stream, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


@overload
def text(exported: dict[str, np.ndarray], key: str) -> str | None: ...
@overload
def text(exported: dict[str, np.ndarray], key: str, default: str) -> str: ...
def text(exported: dict[str, np.ndarray], key: str, default: str | None = None) -> str | None:
    """A string entry of an export, or ``default`` when it is missing or not a string."""
    value = exported.get(key)
    if value is None or value.dtype.kind != "U" or value.ndim != 0:
        return default
    return str(value)


def _argument_names(obj: Any, case) -> list[tuple[str, Any]]:
    """(name, value) of every argument of one call, named as ``obj`` names its parameters."""
    try:
        params = [p.name for p in inspect.signature(obj).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    named = [(params[k] if k < len(params) else f"number {k + 1}", value) for k, value in enumerate(case.args)]
    return named + list(case.kwargs.items())


def _tensors(value: Any, depth: int = 0) -> list[torch.Tensor]:
    """The tensors an argument holds: itself, the items of a list/tuple, a module's parameters and buffers."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, torch.nn.Module):
        return [*value.parameters(), *value.buffers()]
    if isinstance(value, (list, tuple)) and depth < 2:
        return [t for item in value for t in _tensors(item, depth + 1)]
    return []


def _snapshot(named: list[tuple[str, Any]]) -> list[tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]]:
    return [(name, [(t, t.detach().clone()) for t in _tensors(value)]) for name, value in named]


def _changed(snapshot) -> list[str]:
    """Names of the arguments whose tensors differ now from their copies (values, shape or dtype)."""
    changed = []
    for name, pairs in snapshot:
        for now, before in pairs:
            now = now.detach()
            if now.shape != before.shape or now.dtype != before.dtype:
                changed.append(name)
                break
            if now.is_floating_point():  # NaN != NaN: an unchanged NaN input is still unchanged
                now, before = torch.nan_to_num(now), torch.nan_to_num(before)
            if not torch.equal(now, before):
                changed.append(name)
                break
    return changed


def _safe_name(name: str) -> str:
    return "".join(ch for ch in str(name) if ch.isalnum() or ch in "_ ")[:60] or "?"


def collect(spec, obj: Any, *, guarded: bool = True) -> dict[str, np.ndarray]:
    """Run ``obj`` (a function, or for a "value" spec the value itself) on every case of ``spec`` and export
    what came back. Exceptions raised by ``obj`` are recorded per case, never propagated (KeyboardInterrupt, the
    grader's per-cell timeout, still stops it).

    ``guarded`` (the student's function): each call runs inside :func:`rnnkit.grading.guard.recording`, whose
    record of forbidden calls is exported as ``c{i}.guard.*``, and every tensor argument is compared before and
    after the call: ``c{i}.changed`` lists the arguments the function modified in place. The trusted references
    run unguarded."""
    if spec.kind == "value":
        return {**header(spec.name, 1), **export_value(0, obj)}
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # the cases must not follow the kernel's torch.set_default_dtype(...): a
    try:  # student who set float64 (for gradient checks) got float64 inputs where the judge expects float32 ones
        cases = spec.make_cases()
    finally:
        torch.set_default_dtype(default)
    out = header(spec.name, len(cases))
    if guarded:
        out["function"] = _text(_safe_name(getattr(obj, "__name__", spec.name)))
    for i, case in enumerate(cases):
        # named as the notebook's signature names them (the reference's), whatever the student called them
        snapshot = _snapshot(_argument_names(spec.reference, case)) if guarded else []
        record = None
        try:
            with torch.set_grad_enabled(spec.grad_enabled):
                if guarded:
                    with guard.recording(spec.rule, case.args, case.kwargs, fn=spec.reference) as record:
                        result = obj(*case.args, **case.kwargs)
                else:
                    result = obj(*case.args, **case.kwargs)
            out.update(export_value(i, result))
        except (Exception, SystemExit) as exc:  # the student's own error: recorded, shown, scored 0
            out.update(export_error(i, exc))
        if guarded:
            if record is not None:
                out.update(record.export(f"c{i}.guard."))
            out[f"c{i}.changed"] = np.array([_safe_name(n) for n in _changed(snapshot)], dtype=np.str_)
    return out


def case_part(exported: dict[str, np.ndarray], case: int) -> dict[str, np.ndarray]:
    """The entries of one case, with the ``c{i}.`` prefix stripped."""
    prefix = f"c{case}."
    return {key[len(prefix):]: value for key, value in exported.items() if key.startswith(prefix)}
