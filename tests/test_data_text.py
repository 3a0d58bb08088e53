"""rnnkit.data.text: the offline character corpus, its vocabulary and teacher-forcing pairs."""

import numpy as np
import pytest
import torch

from rnnkit.data import (
    CharCorpus,
    CharVocab,
    clean_text,
    load_char_corpus,
    teacher_forcing_pair,
)


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
    assert all(len(a) == len(b) <= 65 and a[0] == e and b[-1] == e for a, b in zip(inputs, targets, strict=True))
    assert all(torch.equal(a[1:], b[:-1]) for a, b in zip(inputs, targets, strict=True))
    assert "".join(corpus.vocab.decode(b) for b in targets) == "".join(corpus.documents)
    seqs = corpus.sequences(max_len=64)
    assert all(torch.equal(s[:-1], a) and torch.equal(s[1:], b) for s, a, b in zip(seqs, inputs, targets, strict=True))
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


def test_char_vocab_type_errors_name_the_problem():
    v = CharVocab.from_text("abc")
    with pytest.raises(TypeError, match="expected a str, got int"):  # was "'int' object is not iterable"
        v.encode(5)
    with pytest.raises(ValueError, match=r"expected integer ids, got 3.0 \(float\)"):  # was "ids in 0..4, got 3.0"
        v.decode(torch.tensor([3.0]))
    with pytest.raises(ValueError, match="from_dict: expected {'chars': str}"):  # was KeyError: 'chars'
        CharVocab.from_dict({"x": 1})
    assert CharVocab.from_dict(v.to_dict()) == v
