"""rnnkit: readable, torch.nn-compatible recurrent networks for the course
"Recurrent networks: RNN, LSTM, GRU".

The public API is re-exported here; each module's docstring names the book chapter that explains it.
"""

__version__ = "0.1.0"
