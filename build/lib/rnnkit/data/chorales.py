r"""Bach chorales from music21's bundled corpus as 88-key binary piano rolls (no network).

Chapter 5 ("LSTM vs GRU") reruns Chung et al. (2014) on these: each chorale is a tensor ``(T, 88)`` of 0/1 float32,
one row per frame, column ``k`` = MIDI pitch ``21 + k`` (A0 .. C8, the piano's 88 keys), like the
Boulanger-Lewandowski et al. (2012) JSB Chorales files (see :mod:`rnnkit.data.bl_format`).

What counts as a chorale: every score under music21's ``corpus/bach`` (MusicXML or Humdrum; one file per BWV
number, preferring ``.mxl``) whose four voices can be found — either parts named Soprano, Alto, Tenor and Bass
(instrumental doublings and obbligato lines are dropped) or exactly four parts. The keyboard fugue and scores
without four voices are skipped, as are cantata movements whose voices are silent in more than a quarter of the
frames (instrumental interludes: not a chorale in the JSB sense) and exact duplicates (the same roll under a second
BWV number). music21 10.5 yields 398 chorales, close to JSB's 382.

Quantisation: a frame of ``r`` quarter notes (1 for ``"quarter"``, 1/2 for ``"eighth"``, 1/4 for ``"sixteenth"``)
holds the pitches sounding at the frame's start, the JSB convention. So at quarter-note frames an off-beat passing
eighth disappears, and a tied or repeated note looks like one held note. Repeats are not expanded.

Parsing all of them takes 15-20 s on an idle core (about a minute cold on a busy 2-core machine), so the rolls are
cached once per frame size and music21 version as ``.npz`` under ``$RNNKIT_CACHE`` (default ``~/.cache/rnnkit``);
loading the cache takes milliseconds. A cache that fails its checks (unreadable, truncated, edited: a SHA-256 of the
arrays is stored with them) is rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import tempfile
import warnings
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .. import _checks

__all__ = ["load_chorales", "chorale_paths", "score_to_piano_roll", "cache_dir", "FRAMES", "LOWEST_MIDI", "NUM_KEYS"]

LOWEST_MIDI = 21  # A0, key 0 of the roll
NUM_KEYS = 88  # A0 .. C8 = MIDI 21 .. 108
FRAMES = {"quarter": Fraction(1), "eighth": Fraction(1, 2), "sixteenth": Fraction(1, 4)}  # frame length in quarters
SPLIT_SIZES = (229, 76, 77)  # JSB Chorales train/valid/test (Boulanger-Lewandowski et al. 2012): our proportions
_CACHE_FORMAT = 2  # bump when the roll encoding or the chorale selection changes
_MAX_SILENT = 0.25  # more silent frames than this: the voices pause for instrumental interludes
_VOICES = ("soprano", "alto", "tenor", "bass")
_SUFFIX_PREFERENCE = (".mxl", ".xml", ".musicxml", ".krn")


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder for parsed datasets: ``path``, else ``$RNNKIT_CACHE``, else ``~/.cache/rnnkit``."""
    if path is None:
        path = os.environ.get("RNNKIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rnnkit")
    return Path(path).expanduser()


def _music21_corpus():
    """music21's corpus module; music21 is an optional dependency (``pip install 'rnnkit[chorales]'``)."""
    try:
        from music21 import corpus
    except ImportError as err:
        raise ImportError("the Bach chorales need music21, an optional dependency of rnnkit: "
                          "pip install 'rnnkit[chorales]'") from err
    return corpus


def chorale_paths() -> list[Path]:
    """Candidate chorale files in music21's bundled Bach corpus, one per piece, sorted by file name."""
    corpus = _music21_corpus()

    best: dict[str, Path] = {}
    for p in corpus.getComposer("bach"):
        p = Path(p)
        if p.suffix not in _SUFFIX_PREFERENCE:  # .rntxt files are roman-numeral analyses, not scores
            continue
        kept = best.get(p.stem)
        if kept is None or _SUFFIX_PREFERENCE.index(p.suffix) < _SUFFIX_PREFERENCE.index(kept.suffix):
            best[p.stem] = p
    return [best[k] for k in sorted(best)]


def _four_voices(score) -> list | None:
    """The S, A, T, B parts of a score, or None when it has no recognisable four voices."""
    parts = list(score.parts)
    by_name = {}
    for part in parts:
        lines = (part.partName or "").strip().splitlines()  # e.g. "Soprano\rOboe 1,2\rViolin1": the first line
        name = lines[0].strip().lower() if lines else ""
        if name in _VOICES and name not in by_name:
            by_name[name] = part
    if len(by_name) == 4:
        return [by_name[v] for v in _VOICES]
    if len(parts) == 4:
        return parts
    return None


def score_to_piano_roll(parts, frame: Fraction | float = 1) -> np.ndarray:
    """Piano roll ``(T, 88)`` uint8 of music21 parts: ``roll[t, p - 21] = 1`` when pitch ``p`` sounds at time
    ``t * frame`` (quarter notes). Raises ValueError for a pitch outside the piano (MIDI 21..108)."""
    frame = Fraction(frame)
    notes = []  # (first frame, end frame exclusive, midi)
    end_time = Fraction(0)
    for part in parts:
        flat = part.flatten()
        end_time = max(end_time, Fraction(flat.highestTime))
        for n in flat.notes:  # Note and Chord; rests carry no pitch
            dur = Fraction(n.duration.quarterLength)
            if dur <= 0:  # grace notes take no time
                continue
            start = Fraction(n.offset)
            # Frame t samples time t*frame: active for start <= t*frame < start + dur.
            first, stop = math.ceil(start / frame), math.ceil((start + dur) / frame)
            for p in n.pitches:
                notes.append((first, stop, p.midi))
    roll = np.zeros((math.ceil(end_time / frame), NUM_KEYS), dtype=np.uint8)  # (T, 88)
    for first, stop, midi in notes:
        if not LOWEST_MIDI <= midi < LOWEST_MIDI + NUM_KEYS:
            raise ValueError(f"expected MIDI pitches in {LOWEST_MIDI}..{LOWEST_MIDI + NUM_KEYS - 1}, got {midi}")
        roll[first:stop, midi - LOWEST_MIDI] = 1
    return roll


def _parse_all(frame: Fraction, limit: int | None, progress: bool) -> tuple[list[str], list[np.ndarray]]:
    corpus = _music21_corpus()
    from tqdm import tqdm  # the text bar: works in terminals, CI logs and notebooks without ipywidgets

    names: list[str] = []
    rolls: list[np.ndarray] = []
    seen: set[bytes] = set()  # hashes of the rolls kept, to skip duplicates
    paths = chorale_paths()
    bar = tqdm(total=limit if limit is not None else len(paths), desc="Parsing Bach chorales (music21)",
               unit="score", disable=not progress)
    with bar:
        for path in paths:
            if limit is not None and len(names) >= limit:
                break
            voices = _four_voices(corpus.parse(path))
            if limit is None:
                bar.update(1)
            if voices is None:
                continue
            roll = score_to_piano_roll(voices, frame)
            if roll.shape[0] == 0 or (roll.sum(1) == 0).mean() > _MAX_SILENT:
                continue
            key = hashlib.sha256(roll.tobytes()).digest()
            if key in seen:  # the same harmonisation filed under two BWV numbers
                continue
            seen.add(key)
            names.append(path.stem)
            rolls.append(roll)
            if limit is not None:
                bar.update(1)
    return names, rolls


def _checksum(names: np.ndarray, lengths: np.ndarray, rolls: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (names, lengths, rolls):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _save_cache(path: Path, names: list[str], rolls: list[np.ndarray], frames: str) -> None:
    names_a = np.array(names, dtype=np.str_)
    lengths = np.array([r.shape[0] for r in rolls], dtype=np.int64)
    stacked = np.concatenate(rolls, axis=0) if rolls else np.zeros((0, NUM_KEYS), np.uint8)  # (sum T, 88)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash or a parallel test never leaves half a file under the real name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, format=np.int64(_CACHE_FORMAT), frames=np.str_(frames), names=names_a,
                                lengths=lengths, rolls=stacked, checksum=np.str_(_checksum(names_a, lengths, stacked)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load_cache(path: Path, frames: str) -> tuple[list[str], list[np.ndarray]]:
    """Read a cache file, raising ValueError with the reason when anything about it is off."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("format", "frames", "names", "lengths", "rolls", "checksum")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
    if int(data["format"]) != _CACHE_FORMAT or str(data["frames"]) != frames:
        raise ValueError(f"made for format {int(data['format'])}, frames {str(data['frames'])!r}")
    names, lengths, rolls = data["names"], data["lengths"], data["rolls"]
    if (rolls.dtype != np.uint8 or rolls.ndim != 2 or rolls.shape[1] != NUM_KEYS or lengths.ndim != 1
            or len(names) != len(lengths) or (lengths < 1).any() or int(lengths.sum()) != rolls.shape[0]):
        raise ValueError("inconsistent arrays")
    if rolls.max(initial=0) > 1:
        raise ValueError("non-binary roll values")
    if _checksum(names, lengths, rolls) != str(data["checksum"]):
        raise ValueError("checksum mismatch")
    return [str(n) for n in names], np.split(rolls, np.cumsum(lengths)[:-1])


def _split_indices(n: int, split_seed: int) -> dict[str, list[int]]:
    total = sum(SPLIT_SIZES)
    n_valid = round(n * SPLIT_SIZES[1] / total)
    n_test = round(n * SPLIT_SIZES[2] / total)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed)).tolist()
    return {
        "train": sorted(perm[n_valid + n_test :]),
        "valid": sorted(perm[:n_valid]),
        "test": sorted(perm[n_valid : n_valid + n_test]),
    }


def load_chorales(
    split_seed: int = 0,
    frames: str = "quarter",
    cache_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    progress: bool = True,
    refresh: bool = False,
    return_names: bool = False,
):
    """Load the four-part Bach chorales as ``{"train", "valid", "test"}`` lists of float32 ``(T_i, 88)`` 0/1 tensors.

    Args:
        split_seed: seeds the permutation that splits the chorales ~60/20/20, like JSB's 229/76/77; the same seed
            always gives the same split (independent of the global RNG).
        frames: ``"quarter"`` (default, as JSB), ``"eighth"`` or ``"sixteenth"``: the time per row.
        cache_dir: where the parsed ``.npz`` lives; default ``$RNNKIT_CACHE`` or ``~/.cache/rnnkit``.
        limit: parse only the first ``limit`` chorales (sorted by BWV file name) — for quick tests and demos;
            cached separately from the full set.
        progress: show a tqdm bar while parsing.
        refresh: ignore an existing cache and parse again.
        return_names: also return ``{"train": [file stem, ...], ...}`` (e.g. ``"bwv269"``) as a second value.
    """
    fn = "load_chorales"
    if frames not in FRAMES:
        raise ValueError(f"{fn}: expected frames in {sorted(FRAMES)}, got {frames!r}")
    split_seed = _checks.integer(fn, "split_seed", split_seed)
    if not -(2**63) <= split_seed < 2**64:  # torch.Generator seeds are 64-bit
        raise ValueError(f"{fn}: expected split_seed in -2**63 .. 2**64 - 1, got {split_seed}")
    limit = _checks.optional_int(fn, "limit", limit, 3)  # one chorale per split
    folder = _resolve_cache_dir(cache_dir)
    _music21_corpus()  # a clear error now if music21 is missing
    music21_version = importlib.metadata.version("music21")  # another music21 may bundle other scores: another file

    subset = "" if limit is None else f"-first{limit}"
    path = folder / f"chorales-v{_CACHE_FORMAT}-music21_{music21_version}-{frames}{subset}.npz"
    names: list[str] | None = None
    rolls: list[np.ndarray] = []
    if path.exists() and not refresh:
        try:
            names, rolls = _load_cache(path, frames)
        except ValueError as e:
            warnings.warn(f"{fn}: cache {path} is corrupt ({e}); parsing the chorales again", RuntimeWarning,
                          stacklevel=2)
    if names is None:
        names, rolls = _parse_all(FRAMES[frames], limit, progress)
        if len(names) < 3:
            raise RuntimeError(f"{fn}: expected music21's bundled Bach corpus to hold chorales, found {len(names)}")
        try:
            _save_cache(path, names, rolls, frames)
        except OSError as e:  # a read-only home (sandbox, CI) still gets its data, just parsed each time
            warnings.warn(f"{fn}: could not write the cache {path} ({e}); set RNNKIT_CACHE to a writable folder",
                          RuntimeWarning, stacklevel=2)
    split = _split_indices(len(names), int(split_seed))
    data = {k: [torch.from_numpy(rolls[i].astype(np.float32)) for i in idx] for k, idx in split.items()}
    if return_names:
        return data, {k: [names[i] for i in idx] for k, idx in split.items()}
    return data


_resolve_cache_dir = cache_dir  # the keyword argument of load_chorales shadows the function's name
