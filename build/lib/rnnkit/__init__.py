"""rnnkit: readable, torch.nn-compatible recurrent networks for the course
"Recurrent networks: RNN, LSTM, GRU".

The public API is re-exported here; each module's docstring names the book chapter that explains it.
"""

__version__ = "0.1.0"

# cells and layers: the equations, and modules that equal torch.nn
# data and sampling: datasets under rnnkit.data, temperature / top-k sampling
# diagnostics: per-step gradient norms and step Jacobians (chapter 2), gate activity (chapters 3-4)
from . import data, diagnostics, gates
from .cells import GRUGates, LSTMGates, gru_cell, gru_gates, lstm_cell, lstm_gates, rnn_cell
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .models import CharLM, PianoRollModel, Seq2Seq, Tagger, units_for_budget
from .sampling import next_symbol_distribution, sample_piano_roll, sample_sequence

# training and models: the Trainer, its config, and the course's small sequence models
from .train import TrainConfig, Trainer
