"""Data preparation: generic pieces every ``mixft prepare`` command reuses, and one module per
prepared dataset kind.

- ``readers``   JSONL / JSON / CSV / Parquet inputs, encoding checks, ``TAG=PATH`` source tags
- ``validate``  field mapping, typed field checks, problem collection (``file:line: field: msg``)
- ``normalize`` whitespace + Unicode NFC, snippet joining, content keys
- ``split``     seeded per-group keys, test-size rules, the streaming train/test assigner
- ``buckets``   disk partitions: key-ordered buckets (external sort) and hash partitions
- ``readpass``  the read pass: inputs in parallel byte ranges, rows checked and keyed to disk
- ``writepass`` the write pass: groups in key order, train/test files hashed while written
- ``lengths``   token lengths exactly as Axolotl builds instruction-style examples; the report
- ``manifest``  input/output hashes, counts, arguments and versions beside the outputs
- ``prompts``   prompt formats Axolotl applies (``context_qa.load_v2``)
- ``prepare_rg`` the RG-specific rules and passes (``mixft prepare rg``); ``prepare tc`` is
  ``mixtral_ft.tc.prepare_tc``, on the same pieces

Nothing here imports typer, torch or transformers at module level.
"""
