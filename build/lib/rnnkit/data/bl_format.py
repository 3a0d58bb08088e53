r"""Boulanger-Lewandowski et al. (2012) polyphonic music files -> 88-key piano rolls.

The benchmark files of Chung et al. (2014) — JSB Chorales, Nottingham, MuseData, Piano-midi.de — come as a pickle
(``JSB Chorales.pickle``) holding::

    {"train": [sequence, ...], "valid": [...], "test": [...]}
    sequence = [frame, frame, ...]          # one frame per time step
    frame    = [60, 64, 67]                 # MIDI pitch numbers sounding in that step (may be empty: a rest)

:func:`load_bl_file` reads that layout from a pickle or a JSON file and returns the same dict with each sequence as a
float32 tensor ``(T, 88)``, key ``k`` = MIDI pitch ``21 + k`` — exactly what :func:`rnnkit.data.chorales.load_chorales`
returns, so ``python -m rnnkit reproduce chung2014 --data-file PATH`` can run the paper's benchmark on the originals.

A pickle is a program, not data: unpickling an untrusted file can run any code. We therefore unpickle with a
restricted ``Unpickler`` that builds only plain containers and numbers (lists, tuples, dicts, sets, ints, floats,
strings, and NumPy number scalars such as ``numpy.int64(60)``, which files made with NumPy often hold) and refuses
every other class or function the file names.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import pickle
from numbers import Real
from pathlib import Path

import torch

__all__ = ["load_bl_file", "bl_to_piano_rolls", "piano_roll_to_pitches", "SPLITS"]

SPLITS = ("train", "valid", "test")
LOWEST_MIDI, NUM_KEYS = 21, 88  # key 0 = A0 = MIDI 21, key 87 = C8 = MIDI 108
_EXPECTED = "a dict mapping 'train', 'valid', 'test' to lists of sequences (lists of frames of MIDI pitch numbers)"
# The only globals a data pickle may name: builtin containers, and what rebuilds a NumPy scalar (its dtype, the scalar
# constructor, and _codecs.encode, which turns the pickled str back into the scalar's bytes). None of them runs code.
_SAFE_GLOBALS = {("builtins", n) for n in ("list", "tuple", "dict", "set", "frozenset")} | {
    ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}
# Python 2 pickles (protocols 0-2, as the original benchmark files are) name the builtins module __builtin__.
_PY2_MODULES = {"__builtin__": "builtins"}
_GZIP_MAGIC = b"\x1f\x8b"
# Decompressed size cap: the largest benchmark file (Piano-midi.de, protocol 0) is tens of MB; a few KB of gzip can
# expand to many GB (a "zip bomb"), which should be an error, not an exhausted machine.
_MAX_DECOMPRESSED = 1 << 30


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global but _SAFE_GLOBALS (containers, NumPy scalars): no os.system & co."""

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only plain lists, tuples, dicts, sets and numbers are allowed "
            "(re-save the data as plain Python lists of ints, or as JSON)"
        )


def _gunzip(raw: bytes, path: Path, fn: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(_MAX_DECOMPRESSED + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # truncated or corrupt archive
        raise ValueError(f"{fn}: {path} looks gzip-compressed but could not be decompressed ({e}); "
                         f"expected {_EXPECTED}") from None
    if len(out) > _MAX_DECOMPRESSED:
        raise ValueError(f"{fn}: {path} decompresses to more than {_MAX_DECOMPRESSED >> 20} MiB; refusing to load it")
    return out


def _read(path: Path, fn: str):
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:  # "JSB Chorales.pickle.gz" and the like: the same content, compressed
        raw = _gunzip(raw, path, fn)
    bom = b"\xef\xbb\xbf"  # UTF-8 byte order mark, written by some editors
    # The content decides, not the suffix: a JSON text starts with { or [, which no pickle does (a pickle starts
    # with its protocol byte 0x80 or, in protocols 0-1, with an opcode such as '(', '}' or ']').
    looks_json = raw.removeprefix(bom).lstrip()[:1] in (b"{", b"[")
    if looks_json:
        try:
            return json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{fn}: {path} is not valid JSON ({e}); expected {_EXPECTED}") from None
    try:
        # latin1 reads the Python 2 pickles the benchmark files were written as.
        return _DataOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"{fn}: {path} is not a plain-data pickle ({e}); expected {_EXPECTED}") from None
    except Exception as e:  # truncated or garbage bytes raise EOFError, ValueError, IndexError, ...
        raise ValueError(
            f"{fn}: {path} could not be read as a pickle or JSON ({type(e).__name__}: {e}); expected {_EXPECTED}"
        ) from None


def _pitch(value, where: str, fn: str) -> int:
    # Accept ints and integral floats (some JSON exports write 60.0); bools, NaN, 60.5 and "60" are not pitches.
    integral = (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
                and float(value) == int(float(value)))
    if not integral:
        raise ValueError(f"{fn}: {where}: expected an integer MIDI pitch number, "
                         f"got {value!r} ({type(value).__name__})")
    p = int(value)
    if not LOWEST_MIDI <= p < LOWEST_MIDI + NUM_KEYS:
        raise ValueError(
            f"{fn}: {where}: expected a MIDI pitch in {LOWEST_MIDI}..{LOWEST_MIDI + NUM_KEYS - 1} "
            f"(the 88 piano keys), got {p}"
        )
    return p


def bl_to_piano_rolls(data, *, source: str = "data") -> dict[str, list[torch.Tensor]]:
    """Validate an in-memory Boulanger-Lewandowski dict and convert it; errors name the offending element,
    e.g. ``train[3][17][1]`` = split ``train``, sequence 3, frame 17, second pitch."""
    fn = f"load_bl_file({source})"
    if not isinstance(data, dict):
        raise ValueError(f"{fn}: expected {_EXPECTED}, got {type(data).__name__}")
    # A pickle written by Python 3 from bytes keys (or read back with encoding="bytes") names the splits b"train":
    # the same splits, so accept them (a str key wins if a file somehow has both).
    data = {**{k.decode("latin1"): v for k, v in data.items() if isinstance(k, bytes)},
            **{k: v for k, v in data.items() if not isinstance(k, bytes)}}
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise ValueError(
            f"{fn}: missing split {', '.join(repr(s) for s in missing)}; expected keys 'train', 'valid', 'test', "
            f"got {sorted(map(str, data))}"
        )
    out: dict[str, list[torch.Tensor]] = {}
    for split in SPLITS:
        seqs = data[split]
        if not isinstance(seqs, (list, tuple)):
            raise ValueError(f"{fn}: {split}: expected a list of sequences, got {type(seqs).__name__}")
        if len(seqs) == 0:
            raise ValueError(f"{fn}: {split}: expected at least one sequence, got an empty list")
        rolls = []
        for i, seq in enumerate(seqs):
            if not isinstance(seq, (list, tuple)):
                raise ValueError(
                    f"{fn}: {split}[{i}]: wrong nesting: expected a sequence (list of frames), got {type(seq).__name__}"
                )
            if len(seq) == 0:
                raise ValueError(f"{fn}: {split}[{i}]: empty sequence; expected at least one frame")
            steps, keys = [], []  # coordinates of the ones, set in one indexing call (long files have ~1e6)
            for t, frame in enumerate(seq):
                if not isinstance(frame, (list, tuple, set, frozenset)):
                    raise ValueError(
                        f"{fn}: {split}[{i}][{t}]: wrong nesting: expected a frame (list of MIDI pitch numbers), "
                        f"got {type(frame).__name__}"
                    )
                for j, value in enumerate(frame):
                    if not (type(value) is int and LOWEST_MIDI <= value < LOWEST_MIDI + NUM_KEYS):  # fast path
                        value = _pitch(value, f"{split}[{i}][{t}][{j}]", fn)
                    steps.append(t)
                    keys.append(value - LOWEST_MIDI)
            roll = torch.zeros(len(seq), NUM_KEYS, dtype=torch.float32)  # (T, 88)
            roll[torch.tensor(steps, dtype=torch.long), torch.tensor(keys, dtype=torch.long)] = 1.0
            rolls.append(roll)
        out[split] = rolls
    return out


def load_bl_file(path: str | os.PathLike) -> dict[str, list[torch.Tensor]]:
    """Read a Boulanger-Lewandowski pickle or JSON file into ``{"train", "valid", "test"}`` lists of float32
    ``(T_i, 88)`` 0/1 tensors. The content decides, whatever the suffix: JSON if it starts with ``{`` or ``[``
    (after an optional UTF-8 byte order mark and white space), pickle otherwise; either may be gzip-compressed.
    Split keys may be ``str`` or ``bytes`` (``b"train"``); other keys are ignored.

    Raises ``ValueError`` naming what was expected for: a missing split, wrong nesting, a non-integer pitch, a
    pitch outside 21..108, an empty sequence or split, unreadable bytes, and any pickle that names a class or
    function (such pickles could execute code and are never loaded).
    """
    path = Path(path).expanduser()  # "~/data/JSB Chorales.pickle" from a config file, where no shell expands it
    if path.is_dir():
        raise IsADirectoryError(f"load_bl_file: {path} is a directory; expected a file such as 'JSB Chorales.pickle'")
    if not path.is_file():
        raise FileNotFoundError(f"load_bl_file: no such file: {path}")
    return bl_to_piano_rolls(_read(path, f"load_bl_file({path.name})"), source=path.name)


def piano_roll_to_pitches(roll: torch.Tensor) -> list[list[int]]:
    """Inverse of the conversion: a ``(T, 88)`` roll -> list of frames of MIDI pitch numbers (to write BL files)."""
    if not isinstance(roll, torch.Tensor) or roll.dim() != 2 or roll.shape[1] != NUM_KEYS:
        shape = tuple(roll.shape) if isinstance(roll, torch.Tensor) else type(roll).__name__
        raise ValueError(f"piano_roll_to_pitches: expected a tensor of shape (T, {NUM_KEYS}), got {shape}")
    return [[LOWEST_MIDI + k for k in torch.nonzero(frame > 0.5).flatten().tolist()] for frame in roll]
