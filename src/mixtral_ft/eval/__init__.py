"""Evaluation: metrics with intervals recomputed from per-item files (docs/evaluation.md).

``stats`` (intervals, paired tests), ``metrics`` (rates, confusion matrix, risk-coverage),
``items`` (reading per-item files), one module per ``mixft eval`` command (``rg``, ``tc``,
``pipeline``, ``compare``), ``correction`` (judged rates corrected for the judge's measured error,
``--checker-eval``), ``render`` (percentages, tables, captions from stored methods) and
``result`` (results.json + report.md).
"""
