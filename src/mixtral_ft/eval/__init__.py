"""Evaluation: metrics with intervals recomputed from per-item files (docs/evaluation.md).

``stats`` (intervals, paired tests), ``metrics`` (rates, confusion matrix, risk-coverage),
``items`` (reading per-item files), one module per ``mixft eval`` command (``rg``, ``tc``,
``pipeline``, ``compare``) and ``result`` (results.json + report.md).
"""
