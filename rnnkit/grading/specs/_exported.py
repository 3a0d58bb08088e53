"""Reading a model's ``state_dict`` back from a sandbox export, in the trusted process (assignments 06 and 08 judge
trained models from their weights)."""

from __future__ import annotations

import numpy as np

from .. import export


def state_dict(got: dict, diverged_hint: str) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The exported state dict as ``{name: float array}``, or ``(None, why)`` in words for the student's feedback;
    ``diverged_hint`` says what to try when an entry holds NaN or inf."""
    from ..judge import _describe, _split  # the judge imports the specs: import it when called

    structure = export.text(got, "structure", "")
    if not (structure.startswith("{") and structure.endswith("}")) or len(structure) < 3:
        return None, "the export should be the model's state_dict (a dict of tensors), got " + (
            _describe(structure) if structure else "nothing")
    weights = {}
    for j, item in enumerate(_split(structure[1:-1])):
        key, _, letter = item.rpartition(":")
        if letter != "T" or export.text(got, f"l{j}.type") != "torch.Tensor":
            return None, f"state_dict entry {key!r} should be a tensor"
        dtype = export.text(got, f"l{j}.dtype", "?")
        if dtype not in ("torch.float32", "torch.float64"):
            return None, f"state_dict entry {key!r} has dtype {dtype}, expected torch.float32"
        value = got.get(f"l{j}.value")
        shape = tuple(np.asarray(got.get(f"l{j}.shape", [])).tolist())
        if value is None or value.dtype.kind != "f" or tuple(value.shape) != shape:
            return None, f"state_dict entry {key!r} could not be read (too large or malformed)"
        if not np.isfinite(value).all():
            return None, f"state_dict entry {key!r} contains NaN or inf: training diverged ({diverged_hint})"
        weights[key] = value
    return weights, None
