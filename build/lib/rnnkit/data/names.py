r"""An offline corpus of short items for character language models: 5,163 US first names (assignment 6).

The names are the 1990 US Census lists of frequently occurring first names (``dist.female.first`` and
``dist.male.first``), lower-cased and deduplicated, shipped in ``census_first_names_1990.json`` beside this module
with their source. A work of the United States Government, they are in the public domain (17 U.S.C. 105).

:func:`load_names` splits them by a hash of each name (SHA-256 modulo 10: bucket 0 is ``"test"``, 1 ``"valid"``, the
rest ``"train"``), so the split needs no random generator and never changes when names are added or reordered.
Each split comes in the order of those hashes, a fixed shuffle: in alphabetical order, consecutive names share
their first letters, so a model reading them as one stream would learn to copy the previous name.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

__all__ = ["load_names", "NAMES_FILE", "NAME_SPLITS"]

NAMES_FILE = Path(__file__).resolve().parent / "census_first_names_1990.json"
NAME_SPLITS = ("train", "valid", "test", "all")


@lru_cache(maxsize=1)
def _all_names() -> tuple[str, ...]:
    return tuple(json.loads(NAMES_FILE.read_text(encoding="utf-8"))["names"])


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def load_names(split: str = "train") -> list[str]:
    """The names of one split (``"train"`` about 80 %, ``"valid"`` and ``"test"`` about 10 % each, or ``"all"``),
    in a fixed shuffled order (see the module docstring): lower-case ASCII letters, 2 to 11 characters each."""
    if split not in NAME_SPLITS:
        raise ValueError(f"load_names: expected split to be one of {NAME_SPLITS}, got {split!r}")
    names = sorted(_all_names(), key=_digest)
    if split == "all":
        return names
    wanted = {"test": (0,), "valid": (1,), "train": tuple(range(2, 10))}[split]
    return [n for n in names if int(_digest(n), 16) % 10 in wanted]
