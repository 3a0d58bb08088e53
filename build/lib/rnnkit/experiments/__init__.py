"""Reproducible experiments behind the book's results: ``chung2014`` (chapter 5's table and learning curves) and
``tasks`` (adding / copy / parity at growing lengths). Run them with ``python -m rnnkit reproduce chung2014`` and
``python -m rnnkit tasks``; each writes a ``results.json`` that records the exact command, config and seed."""
