"""rnnkit.data: chorales (music21, offline), Boulanger-Lewandowski files, synthetic tasks, char corpus, batching."""

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from rnnkit.data import (
    CharCorpus,
    CharVocab,
    adding_problem,
    bl_to_piano_rolls,
    clean_text,
    copy_task,
    iterate_batches,
    load_bl_file,
    load_char_corpus,
    load_chorales,
    pack_batch,
    pad_batch,
    parity_task,
    piano_roll_to_pitches,
    score_to_piano_roll,
    teacher_forcing_pair,
)
from rnnkit.data import chorales as chorales_mod

SPLITS = ("train", "valid", "test")
LIMIT = 8  # chorales parsed in the quick tests (the full set is the slow test below)


# --------------------------------------------------------------------------------------------------- chorales
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
        assert all(torch.equal(x, y) for x, y in zip(first[s], second[s]))


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
        assert all(torch.equal(x, y) for x, y in zip(good[s], again[s]))
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
        for rq, re_ in zip(q[s], e[s]):
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


# ------------------------------------------------------------------------------------- Boulanger-Lewandowski
BL = {
    "train": [[[60, 64, 67], [], [62]], [[21, 108]]],
    "valid": [[[55], [57, 60]]],
    "test": [[(48, 52), (50,)]],  # tuples, as in the original pickles
}


def _write(tmp_path, obj, kind, name="data"):
    path = tmp_path / f"{name}.{'json' if kind == 'json' else 'pickle'}"
    if kind == "json":
        path.write_text(json.dumps(obj))
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


@pytest.mark.parametrize("kind", ["pickle", "json"])
def test_bl_file_round_trip(tmp_path, kind):
    data = load_bl_file(_write(tmp_path, BL, kind))
    assert set(data) == set(SPLITS) and [len(data[s]) for s in SPLITS] == [2, 1, 1]
    first = data["train"][0]
    assert first.dtype == torch.float32 and first.shape == (3, 88)
    assert first[0].nonzero().flatten().tolist() == [60 - 21, 64 - 21, 67 - 21]
    assert first[1].sum() == 0 and first[2].nonzero().flatten().tolist() == [62 - 21]
    assert data["train"][1][0].nonzero().flatten().tolist() == [0, 87]  # A0 and C8, the extreme keys
    for s in SPLITS:  # the inverse gives the same pitch lists back
        assert [piano_roll_to_pitches(r) for r in data[s]] == [[sorted(f) for f in seq] for seq in BL[s]]


def test_bl_file_sniffs_json_without_suffix(tmp_path):
    path = tmp_path / "jsb"
    path.write_text(json.dumps(BL))
    assert len(load_bl_file(path)["train"]) == 2


@pytest.mark.parametrize("kind, name", [("json", "jsb.pickle"), ("json", "jsb.pkl"), ("pickle", "jsb.json"),
                                        ("pickle", "jsb.dat")])
def test_bl_format_is_read_from_the_content_not_the_suffix(tmp_path, kind, name):
    path = tmp_path / name
    path.write_bytes(json.dumps(BL).encode() if kind == "json" else pickle.dumps(BL, protocol=2))
    assert [len(v) for v in load_bl_file(path).values()] == [2, 1, 1]


@pytest.mark.parametrize("name", ["jsb.json", "jsb"])
def test_bl_json_with_byte_order_mark(tmp_path, name):
    # editors on Windows save UTF-8 with a BOM; json.loads refuses it unless it is stripped
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(BL).encode())
    assert len(load_bl_file(path)["train"]) == 2


def _bad(**change):
    data = json.loads(json.dumps(BL))
    data.update(change)
    return data


BAD_FILES = {
    "missing split": ({"train": BL["train"], "test": BL["test"]}, r"missing split 'valid'"),
    "not a dict": ([BL["train"]], "expected a dict mapping 'train', 'valid', 'test'"),
    "split not a list": (_bad(valid={"a": 1}), r"valid: expected a list of sequences"),
    "empty split": (_bad(test=[]), r"test: expected at least one sequence"),
    "sequence is a frame": (_bad(train=[[60, 64]]), r"train\[0\]\[0\]: wrong nesting: expected a frame"),
    "too shallow": (_bad(train=[60]), r"train\[0\]: wrong nesting: expected a sequence"),
    "too deep": (_bad(valid=[[[[60]]]]), r"valid\[0\]\[0\]\[0\]: expected an integer MIDI pitch"),
    "float pitch": (_bad(valid=[[[60.5]]]), r"valid\[0\]\[0\]\[0\]: expected an integer MIDI pitch number, got 60.5"),
    "string pitch": (_bad(test=[[["C4"]]]), r"test\[0\]\[0\]\[0\]: expected an integer MIDI pitch number, got 'C4'"),
    "bool pitch": (_bad(test=[[[True]]]), r"expected an integer MIDI pitch number, got True"),
    "pitch too low": (_bad(train=[[[60], [20]]]), r"train\[0\]\[1\]\[0\]: expected a MIDI pitch in 21..108.*got 20"),
    "pitch too high": (_bad(train=[[[109]]]), r"expected a MIDI pitch in 21..108.*got 109"),
    "empty sequence": (_bad(valid=[[[60]], []]), r"valid\[1\]: empty sequence; expected at least one frame"),
}


@pytest.mark.parametrize("kind", ["pickle", "json"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bl_bad_files(tmp_path, kind, case):
    obj, message = BAD_FILES[case]
    with pytest.raises(ValueError, match=message):
        load_bl_file(_write(tmp_path, obj, kind))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_bl_pickle_with_sets_and_numpy_scalars(tmp_path, protocol):
    # Protocols 0-2 name Python 2's __builtin__ module for a set; files written with NumPy hold NumPy scalars.
    data = {"train": [[{60, 64}, [], [np.int64(62)]]], "valid": [[(np.float64(55.0),)]], "test": [[frozenset()]]}
    path = tmp_path / "data.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    rolls = load_bl_file(path)
    assert [piano_roll_to_pitches(r) for r in rolls["train"]] == [[[60, 64], [], [62]]]
    assert piano_roll_to_pitches(rolls["valid"][0]) == [[55]] and rolls["test"][0].sum() == 0


def test_bl_integral_float_pitch_accepted():
    data = bl_to_piano_rolls(_bad(test=[[[60.0]]]))
    assert data["test"][0][0, 60 - 21] == 1


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", b"{not json", b"\xff\xfe\x00",
                                     b"{" + b'"a":[' * 200_000, b"(" * 200_000])
def test_bl_unreadable_bytes(tmp_path, content):
    path = tmp_path / ("x.json" if content.startswith(b"{") else "x.pickle")
    path.write_bytes(content)
    with pytest.raises(ValueError, match="expected a dict mapping"):
        load_bl_file(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_MARKER",))


class _Harmless:  # any class at all is refused, not only known-dangerous ones
    pass


@pytest.mark.parametrize("payload", [_Exploit(), {"train": [_Harmless()], "valid": [], "test": []},
                                     {"train": np.zeros(3)}])
def test_bl_pickle_refuses_code(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match="refusing to load"):
        load_bl_file(path)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_bl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_bl_file(tmp_path / "nope.pickle")


def test_bl_path_with_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _write(tmp_path, BL, "json", name="jsb")
    assert len(load_bl_file("~/jsb.json")["train"]) == 2  # was 'no such file: ~/jsb.json'


def test_bl_directory_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory; expected a file"):
        load_bl_file(tmp_path)


@pytest.mark.parametrize("kind", ["pickle", "json"])
def test_bl_gzip_compressed_file(tmp_path, kind):
    import gzip

    plain = _write(tmp_path, BL, kind)
    packed = tmp_path / (plain.name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    got, want = load_bl_file(packed), load_bl_file(plain)
    assert all(torch.equal(a, b) for s in SPLITS for a, b in zip(got[s], want[s], strict=True))


def test_bl_gzip_truncated_or_too_large(tmp_path, monkeypatch):
    import gzip

    from rnnkit.data import bl_format

    blob = gzip.compress(pickle.dumps(BL, protocol=2))
    path = tmp_path / "cut.pickle.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="looks gzip-compressed but could not be decompressed"):
        load_bl_file(path)
    path.write_bytes(blob)
    monkeypatch.setattr(bl_format, "_MAX_DECOMPRESSED", 64)  # a decompression bomb, in miniature
    with pytest.raises(ValueError, match="decompresses to more than"):
        load_bl_file(path)


def test_bl_pickle_with_bytes_keys(tmp_path):
    # Python 3 pickles of bytes keys (protocol 2 writes them through _codecs.encode) name the splits b"train".
    path = tmp_path / "bytes_keys.pickle"
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in BL.items()} | {b"meta": 1}, protocol=2))
    assert [len(v) for v in load_bl_file(path).values()] == [2, 1, 1]


def test_bl_python2_protocol0_pickle(tmp_path):
    # What Python 2's cPickle.dump(data, f) (protocol 0) writes: STRING keys, LONG pitches, tuple frames, a rest.
    text = (b"(dp0\nS'train'\np1\n(lp2\n(lp3\n(L60L\nL64L\ntp4\na(tp5\naasS'valid'\np6\n(lp7\n(lp8\n(I55\n"
            b"tp9\naasS'test'\np10\n(lp11\n(lp12\n(I108\nI21\ntp13\naas.")
    path = tmp_path / "JSB Chorales.pickle"
    path.write_bytes(text)
    rolls = load_bl_file(path)
    assert piano_roll_to_pitches(rolls["train"][0]) == [[60, 64], []]
    assert piano_roll_to_pitches(rolls["test"][0]) == [[21, 108]] and rolls["valid"][0].shape == (1, 88)


# ---------------------------------------------------------------------------------------------------- tasks
def _adding_reference(n, t, seed):
    # The contract's recipe, written out independently of rnnkit.
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, t, generator=g)
    i = torch.randint(0, t // 2, (n,), generator=g)
    j = torch.randint(t // 2, t, (n,), generator=g)
    markers = torch.zeros(n, t)
    y = torch.zeros(n)
    for k in range(n):
        markers[k, i[k]] = 1
        markers[k, j[k]] = 1
        y[k] = values[k, i[k]] + values[k, j[k]]
    return torch.stack([values, markers], -1), y


@pytest.mark.parametrize("n,t,seed", [(5, 10, 0), (3, 2, 7), (64, 51, 123)])
def test_adding_problem_matches_spec(n, t, seed):
    x, y = adding_problem(n, t, seed=seed)
    xr, yr = _adding_reference(n, t, seed)
    assert x.shape == (n, t, 2) and y.shape == (n,) and x.dtype == y.dtype == torch.float32
    assert torch.equal(x, xr) and torch.equal(y, yr)
    assert (x[..., 1].sum(1) == 2).all()
    assert (x[:, : t // 2, 1].sum(1) == 1).all()  # one marker in each half
    x64, y64 = adding_problem(n, t, seed=seed, dtype=torch.float64)
    assert x64.dtype == torch.float64 and torch.allclose(y64.float(), y)


def test_adding_problem_baseline():
    _, y = adding_problem(20000, 20, seed=0)
    assert abs(((y - 1.0) ** 2).mean().item() - 1 / 6) < 0.01  # mean predictor's MSE


def _copy_reference(n, length, delay, k, seed):
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(1, k + 1, (n, length), generator=g)
    xs, ys = [], []
    for row in symbols.tolist():
        xs.append(row + [0] * (delay - 1) + [k + 1] + [0] * length)
        ys.append([0] * (length + delay) + row)
    return torch.tensor(xs), torch.tensor(ys)


@pytest.mark.parametrize("n,length,delay,k,seed", [(4, 5, 1, 8, 0), (2, 3, 10, 4, 1), (8, 10, 20, 8, 42)])
def test_copy_task_matches_spec(n, length, delay, k, seed):
    x, y = copy_task(n, length, delay, num_symbols=k, seed=seed)
    xr, yr = _copy_reference(n, length, delay, k, seed)
    assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (n, 2 * length + delay)
    assert torch.equal(x, xr) and torch.equal(y, yr)


@pytest.mark.parametrize("n,t,seed", [(6, 1, 0), (10, 17, 3)])
def test_parity_task_matches_spec(n, t, seed):
    x, y = parity_task(n, t, seed=seed)
    bits = torch.randint(0, 2, (n, t), generator=torch.Generator().manual_seed(seed))
    assert x.shape == (n, t, 1) and x.dtype == torch.float32 and y.dtype == torch.long and y.shape == (n,)
    assert torch.equal(x[..., 0], bits.float()) and torch.equal(y, bits.sum(1) % 2)


def test_tasks_seeded_and_generator_streams():
    a = adding_problem(4, 8, seed=1)
    b = adding_problem(4, 8, seed=1)
    c = adding_problem(4, 8, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(5)
    first, second = copy_task(3, 4, 2, generator=g), copy_task(3, 4, 2, generator=g)
    assert not torch.equal(first[0], second[0])  # a generator is a stream: calls continue it
    assert torch.equal(first[0], copy_task(3, 4, 2, seed=5)[0])
    torch.manual_seed(0)
    p = parity_task(3, 9)
    torch.manual_seed(0)
    assert torch.equal(p[0], parity_task(3, 9)[0])  # without seed, the global seed still rules


@pytest.mark.parametrize("call,exc,match", [
    (lambda: adding_problem(0, 10, seed=0), ValueError, "num_samples >= 1, got 0"),
    (lambda: adding_problem(2, 1, seed=0), ValueError, "seq_len >= 2, got 1"),
    (lambda: adding_problem(2.0, 10, seed=0), TypeError, "num_samples to be an int"),
    (lambda: adding_problem(2, 10, seed=0, dtype=torch.long), TypeError, "floating-point dtype"),
    (lambda: adding_problem(2, 10, seed=0, generator=torch.Generator()), ValueError, "seed or generator"),
    (lambda: copy_task(2, 3, 0, seed=0), ValueError, "delay >= 1, got 0"),
    (lambda: copy_task(2, 0, 1, seed=0), ValueError, "seq_len >= 1"),
    (lambda: copy_task(2, 3, 1, num_symbols=0, seed=0), ValueError, "num_symbols >= 1"),
    (lambda: parity_task(2, 0, seed=0), ValueError, "seq_len >= 1"),
    (lambda: parity_task(2, 3, seed="1"), TypeError, "seed to be an int"),
    (lambda: parity_task(2, 3, generator=1), TypeError, "torch.Generator"),
])
def test_task_argument_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------- char corpus
@pytest.fixture(scope="module")
def corpus():
    return load_char_corpus(max_chars=40_000)


def test_char_corpus_offline_and_deterministic(corpus):
    again = load_char_corpus(max_chars=40_000)
    assert isinstance(corpus, CharCorpus)
    assert corpus.documents == again.documents and corpus.vocab == again.vocab
    assert 39_000 <= sum(map(len, corpus.documents)) <= 40_000
    assert len(corpus) > 20 and all(len(d) > 0 for d in corpus.documents)
    assert set(corpus.text) <= set(corpus.vocab.itos[2:])  # cleaned onto the vocabulary
    assert len(corpus.vocab) <= 100
    full = load_char_corpus()
    assert len(full.text) > 100_000  # plenty for a character model


def test_char_vocab_eos_pad_round_trip(corpus):
    v = corpus.vocab
    assert (v.pad, v.eos) == (0, 1) and v.itos[:2] == ["<pad>", "<eos>"]
    text = corpus.documents[3][:200]
    ids = v.encode(text, add_eos=True)
    assert ids.dtype == torch.long and ids[-1] == v.eos and (ids[:-1] >= 2).all()
    assert v.decode(ids) == text
    assert v.decode(torch.cat([ids, torch.tensor([5, 6])])) == text  # stops at EOS
    assert v.decode([0, *ids.tolist()]) == text  # PAD skipped
    assert v.decode([7, 1, 8], stop_at_eos=False) == v.itos[7] + "<eos>" + v.itos[8]
    assert v.decode(ids.numpy()) == v.decode([np.int64(i) for i in ids.tolist()]) == text  # NumPy ids too
    assert CharVocab.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="not in the vocabulary"):
        v.encode("snowman \u2603")
    with pytest.raises(ValueError, match="expected ids in 0.."):
        v.decode([len(v)])
    with pytest.raises(ValueError, match="expected integer ids, got 2.0"):
        v.decode([2.0])


def test_teacher_forcing_pairs(corpus):
    x, y = teacher_forcing_pair("abc", corpus.vocab)
    e = corpus.vocab.eos
    assert x.tolist() == [e, *corpus.vocab.encode("abc").tolist()]
    assert y.tolist() == [*corpus.vocab.encode("abc").tolist(), e]
    inputs, targets = corpus.pairs(max_len=64)
    assert all(len(a) == len(b) <= 65 and a[0] == e and b[-1] == e for a, b in zip(inputs, targets))
    assert all(torch.equal(a[1:], b[:-1]) for a, b in zip(inputs, targets))
    assert "".join(corpus.vocab.decode(b) for b in targets) == "".join(corpus.documents)
    seqs = corpus.sequences(max_len=64)
    assert all(torch.equal(s[:-1], a) and torch.equal(s[1:], b) for s, a, b in zip(seqs, inputs, targets))
    train, valid = corpus.split(0.2, seed=0)
    assert len(train) + len(valid) == len(corpus) and not set(train.documents) & set(valid.documents)
    assert train.documents == corpus.split(0.2, seed=0)[0].documents


def test_char_corpus_errors():
    with pytest.raises(ValueError, match="no module named 'no_such_module_xyz'"):
        load_char_corpus(["json", "no_such_module_xyz"])
    with pytest.raises(TypeError, match="sequence of module names"):
        load_char_corpus("json")
    with pytest.raises(RuntimeError, match="found no docstrings"):
        load_char_corpus(["math"])  # a compiled module: no source to read


def test_clean_text():
    assert clean_text("Caf\u00e9\tna\u00efve \u2603  \n\n\n\nend  ") == "Cafe    naive\n\nend"


# ------------------------------------------------------------------------------------------------- batching
def _seqs(lengths, features=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(t, features, generator=g, dtype=dtype) for t in lengths]


def test_pad_batch_time_major():
    seqs = _seqs([3, 5, 1])
    padded, lengths = pad_batch(seqs)
    assert padded.shape == (5, 3, 3) and padded.dtype == torch.float64
    assert lengths.tolist() == [3, 5, 1] and lengths.dtype == torch.long and lengths.device.type == "cpu"
    for b, s in enumerate(seqs):
        assert torch.equal(padded[: len(s), b], s) and (padded[len(s):, b] == 0).all()
    tokens, _ = pad_batch([torch.tensor([1, 2]), torch.tensor([3])], padding_value=0)
    assert tokens.tolist() == [[1, 3], [2, 0]] and tokens.dtype == torch.long


def test_pack_batch_matches_torch():
    seqs = _seqs([2, 4, 3])
    packed = pack_batch(seqs)
    ref = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    assert torch.equal(packed.data, ref.data) and torch.equal(packed.batch_sizes, ref.batch_sizes)
    unpacked, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed)
    assert torch.equal(unpacked, pad_batch(seqs)[0]) and lengths.tolist() == [2, 4, 3]


@pytest.mark.parametrize("bad,exc,match", [
    ([], ValueError, "at least one sequence"),
    (torch.zeros(3, 2), TypeError, "list of tensors"),
    ([torch.zeros(3, 2), torch.zeros(3, 4)], ValueError, r"feature shape \(2,\).*got \(4,\) for sequence 1"),
    ([torch.zeros(3, 2), torch.zeros(0, 2)], ValueError, "sequence 1 to have at least one time step"),
    ([torch.zeros(3), torch.zeros(3, dtype=torch.long)], ValueError, "dtype torch.float32"),
    ([torch.zeros(3), [1, 2]], TypeError, "sequence 1 to be a torch.Tensor"),
])
def test_batching_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        pad_batch(bad)


def test_iterate_batches_seeded_covers_everything():
    seqs = _seqs([5, 1, 7, 3, 2, 6, 4])
    labels = torch.arange(7)

    def order(**kw):
        out = []
        for padded, lengths, y in iterate_batches(seqs, 3, targets=labels, **kw):
            assert padded.shape[:2] == (int(lengths.max()), len(y))
            for b, k in enumerate(y.tolist()):
                assert lengths[b] == len(seqs[k]) and torch.equal(padded[: lengths[b], b], seqs[k])
            out.append(y.tolist())
        return out

    a, b, c = order(seed=0), order(seed=0), order(seed=1)
    assert a == b and a != c
    assert sorted(sum(a, [])) == list(range(7)) and [len(x) for x in a] == [3, 3, 1]
    assert order(shuffle=False) == [[0, 1, 2], [3, 4, 5], [6]]
    assert [len(x) for x in order(seed=0, drop_last=True)] == [3, 3]
    bucketed = order(seed=0, bucket=True)
    assert sorted(sum(bucketed, [])) == list(range(7))
    for batch in bucketed:  # sorted by length inside each batch
        assert [len(seqs[k]) for k in batch] == sorted(len(seqs[k]) for k in batch)
    seq_targets = [s[:, 0] for s in seqs]
    for padded, lengths, y in iterate_batches(seqs, 4, targets=seq_targets, seed=0):
        assert torch.equal(y, padded[..., 0])
    with pytest.raises(ValueError, match="expected 7 targets"):
        next(iterate_batches(seqs, 2, targets=labels[:3]))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        next(iterate_batches(seqs, 0))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_batching_on_device(device):
    seqs = _seqs([2, 3])
    padded, lengths = pad_batch(seqs, device=device)
    assert padded.device.type == device and lengths.device.type == "cpu"
    assert pack_batch(seqs, device=device).data.device.type == device
    (p, l_, y), = iterate_batches(seqs, 2, targets=torch.tensor([0, 1]), device=device, seed=0)
    assert p.device.type == device and y.device.type == device
    moved, _ = pad_batch([s.to(device) for s in seqs])  # default: the sequences' own device
    assert moved.device.type == device


def test_padded_and_packed_batches_give_the_same_layer_output():
    from rnnkit import GRU

    torch.manual_seed(0)
    gru = GRU(3, 4, dtype=torch.float64)
    seqs = _seqs([4, 2, 5])
    padded, lengths = pad_batch(seqs)
    out_pad, h_pad = gru(padded, lengths=lengths)  # (T, B, H), (1, B, H)
    out_packed, h_packed = gru(pack_batch(seqs))
    unpacked, _ = torch.nn.utils.rnn.pad_packed_sequence(out_packed)
    torch.testing.assert_close(unpacked, out_pad)
    torch.testing.assert_close(h_packed, h_pad)
    for b, s in enumerate(seqs):  # each sequence alone gives its own column
        alone, _ = gru(s[:, None])
        torch.testing.assert_close(out_pad[: len(s), b], alone[:, 0])


def test_pad_batch_refuses_a_padding_value_the_dtype_cannot_hold():
    tokens = [torch.arange(3), torch.arange(1)]
    with pytest.raises(ValueError, match=r"integer padding_value for torch.int64 sequences, got 0.5"):
        pad_batch(tokens, padding_value=0.5)  # torch.full wrote 0 silently
    with pytest.raises(ValueError, match="padding_value 0/1"):
        pad_batch([torch.ones(2, dtype=torch.bool)], padding_value=2)
    assert pad_batch(tokens, padding_value=-1.0)[0][:, 1].tolist() == [0, -1, -1]  # an integral float is fine


def test_iterate_batches_accepts_numpy_batch_size_and_a_list_of_labels():
    seqs = [torch.randn(n, 2) for n in (3, 5, 1)]
    batches = list(iterate_batches(seqs, np.int64(2), targets=[7, 8, 9], shuffle=False))
    assert [b[2].tolist() for b in batches] == [[7, 8], [9]]  # the list was read as sequences ('got int')


def test_char_vocab_type_errors_name_the_problem():
    v = CharVocab.from_text("abc")
    with pytest.raises(TypeError, match="expected a str, got int"):  # was "'int' object is not iterable"
        v.encode(5)
    with pytest.raises(ValueError, match=r"expected integer ids, got 3.0 \(float\)"):  # was "ids in 0..4, got 3.0"
        v.decode(torch.tensor([3.0]))
    with pytest.raises(ValueError, match="from_dict: expected {'chars': str}"):  # was KeyError: 'chars'
        CharVocab.from_dict({"x": 1})
    assert CharVocab.from_dict(v.to_dict()) == v


def test_chorale_split_seed_beyond_64_bits(cache):
    with pytest.raises(ValueError, match="split_seed in -2\\*\\*63"):  # was 'Overflow when unpacking long long'
        load_chorales(split_seed=2**64, limit=LIMIT, progress=False)
