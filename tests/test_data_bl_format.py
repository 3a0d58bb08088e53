"""rnnkit.data.bl_format: Boulanger-Lewandowski files (JSON or pickle, safely), to and from piano rolls."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from rnnkit.data import (
    bl_to_piano_rolls,
    load_bl_file,
    piano_roll_to_pitches,
)

SPLITS = ("train", "valid", "test")


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
