r"""An offline character corpus: docstrings of the Python standard library, read at run time.

Chapter 6 trains a character-level language model and samples from it (:mod:`rnnkit.sampling`). The text must be
available without a network and without copying anyone's prose into this repository, so we read it from the
interpreter's own standard library: the docstrings of a fixed list of modules, found with ``ast`` in their source
files (nothing is imported, so no module's side effects run and ``python -OO`` does not matter). The selection is
deterministic for a given Python version; the corpus differs a little between Python versions, as the docs do.

Cleaning keeps a modest alphabet: printable ASCII plus newline (accents are stripped, tabs become spaces, other
characters are dropped), so the vocabulary has about 100 symbols.

Vocabulary (:class:`CharVocab`): id 0 is ``PAD`` (ignored by the loss), id 1 is ``EOS``, then the characters.
``EOS`` doubles as the start symbol, as GPT-2's ``<|endoftext|>`` does: a document ``"abc"`` becomes the
teacher-forcing pair ``input = [EOS, a, b, c]``, ``target = [a, b, c, EOS]`` — at each step the model sees the
characters so far and must predict the next one, the last being "stop". Sampling starts from ``EOS`` and stops when
the model emits ``EOS`` again.
"""

from __future__ import annotations

import ast
import importlib.util
import operator
import string
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["CharVocab", "CharCorpus", "load_char_corpus", "clean_text", "teacher_forcing_pair", "DEFAULT_MODULES",
           "ALPHABET"]

# Standard-library modules with plenty of prose in their docstrings (pure-Python sources, present in every CPython).
DEFAULT_MODULES = (
    "argparse", "bisect", "calendar", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "fractions", "functools", "heapq", "inspect", "ipaddress", "json", "logging", "pathlib", "pprint",
    "queue", "random", "shutil", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
    "typing", "unittest", "urllib.parse", "zipfile",
)
#: The corpus alphabet, newline plus printable ASCII (digits, letters, punctuation, space).
ALPHABET = "\n" + string.printable[:95]
_ALLOWED = frozenset(ALPHABET)


def clean_text(text: str) -> str:
    """Map text onto :data:`ALPHABET`: strip accents, tabs -> 4 spaces, drop other characters, trim trailing
    spaces and collapse runs of blank lines."""
    text = unicodedata.normalize("NFKD", text).replace("\t", "    ").replace("\r\n", "\n")
    text = "".join(c for c in text if c in _ALLOWED)
    lines = [line.rstrip() for line in text.split("\n")]
    out, blank = [], False
    for line in lines:
        if not line and blank:
            continue
        blank = not line
        out.append(line)
    return "\n".join(out).strip("\n")


class CharVocab:
    """Characters <-> ids. ``pad`` (0) and ``eos`` (1) come first; ``chars`` follow in sorted order."""

    PAD, EOS = "<pad>", "<eos>"

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"CharVocab: expected single characters, got {bad[:3]!r}")
        self.itos: list[str] = [self.PAD, self.EOS, *chars]
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos) if i >= 2}
        self.pad, self.eos = 0, 1

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(set(text))

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} symbols: pad=0, eos=1, {len(self) - 2} characters)"

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocab) and self.itos == other.itos

    def encode(self, text: str, *, add_eos: bool = False) -> torch.Tensor:
        """int64 tensor ``(len(text) [+1],)`` of ids; raises ValueError on a character outside the vocabulary."""
        if not isinstance(text, str):  # a list of str would work by accident, an int fails with "not iterable"
            raise TypeError(f"CharVocab.encode: expected a str, got {type(text).__name__}")
        try:
            ids = [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(
                f"CharVocab.encode: character {e.args[0]!r} is not in the vocabulary ({len(self) - 2} characters); "
                "clean the text with rnnkit.data.clean_text or build the vocabulary from it"
            ) from None
        if add_eos:
            ids.append(self.eos)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids, *, stop_at_eos: bool = True) -> str:
        """Text of a 1-D sequence of ids (tensor, NumPy array or list). PAD is skipped; decoding ends at the first EOS
        (or, with ``stop_at_eos=False``, EOS is written as ``"<eos>"``)."""
        if hasattr(ids, "tolist") and hasattr(ids, "shape"):  # a tensor or a NumPy array
            if len(ids.shape) != 1:
                raise ValueError(f"CharVocab.decode: expected a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for value in ids:
            try:  # an int or a NumPy int; floats and bools are not ids
                i = None if isinstance(value, bool) else operator.index(value)
            except TypeError:
                i = None
            if i is None:  # 3.0 is in range but not an id: say what is wrong with it
                raise ValueError(f"CharVocab.decode: expected integer ids, got {value!r} ({type(value).__name__})")
            if not 0 <= i < len(self):
                raise ValueError(f"CharVocab.decode: expected ids in 0..{len(self) - 1}, got {value!r}")
            if i == self.pad:
                continue
            if i == self.eos:
                if stop_at_eos:
                    break
                out.append(self.EOS)
                continue
            out.append(self.itos[i])
        return "".join(out)

    def to_dict(self) -> dict:
        """Plain data for checkpoints; :meth:`CharVocab.from_dict` rebuilds an equal vocabulary."""
        return {"chars": "".join(self.itos[2:])}

    @classmethod
    def from_dict(cls, d: dict) -> CharVocab:
        """Rebuild the vocabulary that :meth:`CharVocab.to_dict` saved."""
        if not isinstance(d, dict) or not isinstance(d.get("chars"), str):
            raise ValueError(f"CharVocab.from_dict: expected {{'chars': str}} (from CharVocab.to_dict), got {d!r:.80}")
        return cls(d["chars"])


def teacher_forcing_pair(text: str, vocab: CharVocab) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input, target)`` int64 tensors of length ``len(text) + 1``: ``[EOS, c_1..c_n]`` and ``[c_1..c_n, EOS]``."""
    ids = vocab.encode(text)  # (n,)
    eos = torch.tensor([vocab.eos])
    return torch.cat([eos, ids]), torch.cat([ids, eos])


def _module_docstrings(module: str) -> list[str]:
    """Docstrings of a module, its public classes/functions and their methods, in source order, without importing."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ValueError(f"load_char_corpus: no module named {module!r} is installed")
    if not spec.origin or not spec.origin.endswith(".py"):
        return []  # a compiled extension or namespace package: no Python source to read
    with open(spec.origin, encoding="utf-8") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. SyntaxWarning for an invalid escape in some docstring
        tree = ast.parse(f.read(), filename=spec.origin)
    docs = []

    def visit(node, depth: int) -> None:
        doc = ast.get_docstring(node, clean=True)
        if doc:
            docs.append(doc)
        if depth < 2:
            for child in node.body:
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not (
                    child.name.startswith("_") and not child.name.startswith("__init__")
                ):
                    visit(child, depth + 1)

    visit(tree, 0)
    return docs


@dataclass
class CharCorpus:
    """Cleaned documents (one per docstring), their vocabulary, and where they came from."""

    documents: list[str]
    vocab: CharVocab
    modules: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        """All documents, separated by blank lines (for statistics and figures)."""
        return "\n\n".join(self.documents)

    def __len__(self) -> int:
        return len(self.documents)

    def split(self, valid_fraction: float = 0.1, *, seed: int = 0) -> tuple[CharCorpus, CharCorpus]:
        """Document-level ``(train, valid)`` split with a seeded permutation; both share this vocabulary."""
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"CharCorpus.split: expected 0 < valid_fraction < 1, got {valid_fraction}")
        n_valid = max(1, round(len(self.documents) * valid_fraction))
        if n_valid >= len(self.documents):
            raise ValueError(f"CharCorpus.split: expected at least 2 documents, got {len(self.documents)}")
        perm = torch.randperm(len(self.documents), generator=torch.Generator().manual_seed(seed)).tolist()
        pick = lambda idx: CharCorpus([self.documents[i] for i in sorted(idx)], self.vocab, self.modules)  # noqa: E731
        return pick(perm[n_valid:]), pick(perm[:n_valid])

    def sequences(self, max_len: int | None = 256) -> list[torch.Tensor]:
        """Token sequences ``[EOS, c_1..c_n, EOS]`` (documents cut into chunks of at most ``max_len`` characters);
        ``s[:-1]`` and ``s[1:]`` are the teacher-forcing input and target (what ``CharLM.collate`` expects)."""
        inputs, targets = self.pairs(max_len)
        return [torch.cat([x, y[-1:]]) for x, y in zip(inputs, targets, strict=True)]

    def pairs(self, max_len: int | None = 256) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Teacher-forcing ``(inputs, targets)`` lists, one pair per document; documents longer than ``max_len``
        characters are cut into consecutive chunks of at most ``max_len`` (each chunk becomes a pair, so every
        sequence is at most ``max_len + 1`` long). Batch them with ``iterate_batches(inputs, B, targets=targets)``
        and ignore ``vocab.pad`` in the loss."""
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"CharCorpus.pairs: expected max_len to be None or an int >= 1, got {max_len!r}")
        inputs, targets = [], []
        for doc in self.documents:
            step = max_len or len(doc)
            for start in range(0, len(doc), step):
                x, y = teacher_forcing_pair(doc[start : start + step], self.vocab)
                inputs.append(x)
                targets.append(y)
        return inputs, targets


def load_char_corpus(
    modules: Sequence[str] = DEFAULT_MODULES,
    *,
    min_chars: int = 40,
    max_chars: int | None = None,
) -> CharCorpus:
    """Build the docstring corpus: every docstring of ``modules`` with at least ``min_chars`` characters after
    cleaning, duplicates dropped, in module order then source order; stop once ``max_chars`` characters are
    collected (``None``: all, about 250 kB with the defaults). The vocabulary is :data:`ALPHABET`, so corpora made
    from different modules share ids."""
    if isinstance(modules, str):
        raise TypeError("load_char_corpus: expected a sequence of module names, got a str (wrap it in a list)")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"load_char_corpus: expected max_chars >= 1 or None, got {max_chars}")
    documents, seen, total = [], set(), 0
    for module in modules:
        for doc in _module_docstrings(module):
            doc = clean_text(doc)
            if len(doc) < min_chars or doc in seen:
                continue
            seen.add(doc)
            if max_chars is not None and total + len(doc) > max_chars:
                doc = doc[: max_chars - total]
            documents.append(doc)
            total += len(doc)
            if max_chars is not None and total >= max_chars:
                break
        if max_chars is not None and total >= max_chars:
            break
    if not documents:
        raise RuntimeError(f"load_char_corpus: found no docstrings in modules {list(modules)}")
    return CharCorpus(documents, CharVocab(ALPHABET), tuple(modules))
