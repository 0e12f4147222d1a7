"""``mixft prepare``: one pipeline, two rule sets.

- ``pipeline``  ``run_prepare(PrepareOptions, Task)``: the passes in order, staging, manifest
- ``options``   ``PrepareOptions``: what every task takes
- ``rg``, ``tc`` each task's rules (``RgTask``, ``TcTask``): fields, groups, checks, output rows,
  summary; ``judgements`` reads ``mixft judge`` outputs for ``prepare tc --judgements``
- ``readers``   JSONL / JSON / CSV / Parquet inputs, encoding checks, ``TAG=PATH`` source tags
- ``fields``    the field checker: field mapping, typed checks, problems (``file:line: field: msg``)
- ``split``     seeded group keys, test-size rules, the streaming train/test assigner
- ``buckets``   work files: key-ordered buckets (external sort), hash partitions, the bucket line
- ``readpass``  the read pass: inputs in parallel byte ranges, rows checked and keyed to disk
- ``writepass`` the write pass: groups in key order to train/test, hashed while written; rejected.jsonl
- ``summary``   the tallies, the result a command prints, the preview

Text normalization, prompt formats, token lengths and the manifest helpers are in
``mixtral_ft.data`` (inference and planning use them too). Nothing here imports typer, torch or
transformers at module level.
"""
