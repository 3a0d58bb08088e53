"""rnnkit.data.chorales: Bach chorales from music21 (offline) as piano rolls, their split and cache."""

import os
import warnings

import numpy as np
import pytest
import torch

from rnnkit.data import chorales as chorales_mod
from rnnkit.data import (
    load_chorales,
    score_to_piano_roll,
)

SPLITS = ("train", "valid", "test")
LIMIT = 8  # chorales parsed in the quick tests (the full set is the slow test below)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("RNNKIT_CACHE", str(folder))
    return folder


def _all_names(names):
    return [n for s in SPLITS for n in names[s]]


def test_chorales_shapes_dtype_binary(cache):
    data, names = load_chorales(limit=LIMIT, progress=False, return_names=True)
    assert set(data) == set(SPLITS)
    rolls = [r for s in SPLITS for r in data[s]]
    assert len(rolls) == LIMIT and all(len(data[s]) >= 1 for s in SPLITS)
    for r in rolls:
        assert r.dtype == torch.float32 and r.dim() == 2 and r.shape[1] == 88 and r.shape[0] > 8
        assert set(r.unique().tolist()) <= {0.0, 1.0}
        per_frame = r.sum(1)
        assert per_frame.max() <= 4  # four voices: at most four keys per frame
        assert (per_frame == 4).float().mean() > 0.5  # mostly full four-part chords
        keys = r.nonzero()[:, 1] + 21  # MIDI pitches
        assert keys.min() >= 36 and keys.max() <= 84  # voices stay within C2..C6
    assert all(n.startswith("bwv") for n in _all_names(names))
    assert list(cache.glob("*.npz")), "the parse was not cached under $RNNKIT_CACHE"


def test_chorale_split_deterministic_and_disjoint(cache):
    _, a = load_chorales(split_seed=0, limit=LIMIT, progress=False, return_names=True)
    _, b = load_chorales(split_seed=0, limit=LIMIT, progress=False, return_names=True)
    _, c = load_chorales(split_seed=1, limit=LIMIT, progress=False, return_names=True)
    assert a == b
    assert a != c
    for names in (a, c):
        flat = _all_names(names)
        assert len(flat) == len(set(flat)) == LIMIT  # disjoint, nothing lost
        assert set(flat) == set(_all_names(a))


def test_chorale_cache_round_trip_skips_parsing(cache, monkeypatch):
    first = load_chorales(limit=LIMIT, progress=False)

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again although a valid cache exists")

    monkeypatch.setattr(chorales_mod, "_parse_all", no_parse)
    second = load_chorales(limit=LIMIT, progress=False, cache_dir=None)
    for s in SPLITS:
        assert len(first[s]) == len(second[s])
        assert all(torch.equal(x, y) for x, y in zip(first[s], second[s], strict=True))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "tampered"])
def test_corrupt_chorale_cache_is_rebuilt(cache, damage):
    good = load_chorales(limit=LIMIT, progress=False)
    (path,) = cache.glob("*.npz")
    raw = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    else:  # a readable file whose roll was edited: only the checksum can tell
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["rolls"][0, 40] ^= 1
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        again = load_chorales(limit=LIMIT, progress=False)
    for s in SPLITS:
        assert all(torch.equal(x, y) for x, y in zip(good[s], again[s], strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is valid: no second warning
        load_chorales(limit=LIMIT, progress=False)


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RNNKIT_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="could not write the cache"):
        data = load_chorales(limit=3, progress=False)
    assert sum(len(v) for v in data.values()) == 3


def test_chorale_frames_option(cache):
    q = load_chorales(limit=3, progress=False)
    e = load_chorales(limit=3, progress=False, frames="eighth")
    for s in SPLITS:
        for rq, re_ in zip(q[s], e[s], strict=True):
            assert abs(re_.shape[0] - 2 * rq.shape[0]) <= 1
            # every quarter-note frame is the eighth frame sampled at the same time
            assert torch.equal(rq, re_[::2][: rq.shape[0]])


def test_chorale_argument_errors(cache):
    with pytest.raises(ValueError, match="frames"):
        load_chorales(frames="half")
    with pytest.raises(ValueError, match="limit"):
        load_chorales(limit=1)
    with pytest.raises(TypeError, match="split_seed"):
        load_chorales(split_seed="0")


def test_score_to_piano_roll_quantisation():
    from music21 import chord, note, stream

    part = stream.Part()
    part.append(note.Note(60, quarterLength=1))  # beat 0
    part.append(note.Note(62, quarterLength=0.5))  # beat 1
    part.append(note.Note(64, quarterLength=0.5))  # off-beat passing note: lost at quarter frames
    part.append(chord.Chord([48, 55], quarterLength=2))  # beats 2-3
    part.append(note.Rest(quarterLength=1))  # beat 4
    q = score_to_piano_roll([part], 1)
    expected = np.zeros((5, 88), np.uint8)
    expected[0, 60 - 21] = 1
    expected[1, 62 - 21] = 1
    expected[2:4, [48 - 21, 55 - 21]] = 1
    np.testing.assert_array_equal(q, expected)
    e = score_to_piano_roll([part], 0.5)
    assert e.shape == (10, 88) and e[3, 64 - 21] == 1 and e[2, 62 - 21] == 1 and not e[8:].any()
    low = stream.Part([note.Note(20, quarterLength=1)])
    with pytest.raises(ValueError, match="21..108"):
        score_to_piano_roll([low], 1)


def test_duplicate_and_interlude_scores_are_skipped(cache, monkeypatch):
    paths = chorales_mod.chorale_paths()
    by_stem = {p.stem: p for p in paths}
    a, b, c = (by_stem[k] for k in ("bwv269", "bwv347", "bwv153.1"))
    interlude = by_stem["bwv248.64-6"]  # SATB silent for most of the movement while the orchestra plays
    monkeypatch.setattr(chorales_mod, "chorale_paths", lambda: [a, a, interlude, b, c])
    _, names = load_chorales(progress=False, return_names=True, refresh=True)
    assert sorted(_all_names(names)) == ["bwv153.1", "bwv269", "bwv347"]


@pytest.mark.parametrize("n", [382, 406, 10, 3])
def test_split_proportions_follow_jsb(n):
    idx = chorales_mod._split_indices(n, 0)
    sizes = [len(idx[s]) for s in SPLITS]
    if n == 382:
        assert sizes == [229, 76, 77]  # JSB Chorales' own split sizes
    assert sum(sizes) == n and min(sizes) >= 1
    assert abs(sizes[1] - n * 76 / 382) <= 0.5 and abs(sizes[2] - n * 77 / 382) <= 0.5
    assert sorted(sum(idx.values(), [])) == list(range(n))


def test_chorale_candidates_are_bundled():
    paths = chorales_mod.chorale_paths()
    assert len(paths) >= 400 and all(p.is_file() for p in paths)
    assert len({p.stem for p in paths}) == len(paths)  # one file per piece


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RNNKIT_TEST_FULL_CHORALES"),
                    reason="parses all ~400 chorales (20-50 s); set RNNKIT_TEST_FULL_CHORALES=1 to run")
def test_full_chorale_set_split_sizes(cache):
    data, names = load_chorales(progress=False, return_names=True)
    counts = {s: len(data[s]) for s in SPLITS}
    n = sum(counts.values())
    assert n >= 340  # music21 bundles ~400 four-part chorale harmonisations
    assert abs(counts["valid"] / n - 76 / 382) < 0.01 and abs(counts["test"] / n - 77 / 382) < 0.01
    flat = _all_names(names)
    assert len(flat) == len(set(flat)) == n


def test_chorale_split_seed_beyond_64_bits(cache):
    with pytest.raises(ValueError, match="split_seed in -2\\*\\*63"):  # was 'Overflow when unpacking long long'
        load_chorales(split_seed=2**64, limit=LIMIT, progress=False)
