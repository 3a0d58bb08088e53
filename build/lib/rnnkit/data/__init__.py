"""Datasets for the course, all offline: Bach chorales (music21), Boulanger-Lewandowski files, synthetic long-range
tasks, a docstring character corpus, and batching of variable-length sequences.

Chapter 5 uses the chorales and the tasks; chapter 6 the character corpus; every chapter the batching helpers;
chapter 2 the stateful minibatches of truncated BPTT (:mod:`rnnkit.data.streams`).
"""

from .batching import iterate_batches, pack_batch, pad_batch
from .bl_format import bl_to_piano_rolls, load_bl_file, piano_roll_to_pitches
from .chorales import load_chorales, score_to_piano_roll
from .streams import detach_state, stream_windows
from .tasks import adding_problem, copy_task, parity_task
from .text import CharCorpus, CharVocab, clean_text, load_char_corpus, teacher_forcing_pair

__all__ = [
    "load_chorales", "score_to_piano_roll",
    "load_bl_file", "bl_to_piano_rolls", "piano_roll_to_pitches",
    "adding_problem", "copy_task", "parity_task",
    "CharCorpus", "CharVocab", "clean_text", "load_char_corpus", "teacher_forcing_pair",
    "pad_batch", "pack_batch", "iterate_batches",
    "stream_windows", "detach_state",
]
