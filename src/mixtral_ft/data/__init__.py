"""Data preparation: generic pieces every ``mixft prepare`` command reuses, and one module per
prepared dataset kind.

- ``readers``   JSONL / JSON / CSV / Parquet inputs, encoding checks, ``TAG=PATH`` source tags
- ``validate``  field mapping, typed field checks, problem collection (``file:line: field: msg``)
- ``normalize`` whitespace + Unicode NFC, snippet joining, content keys
- ``split``     seeded per-group keys, test-size rules, the streaming train/test assigner
- ``buckets``   disk partitions: key-ordered buckets (external sort) and duplicate finding
- ``lengths``   token lengths exactly as Axolotl builds instruction-style examples
- ``manifest``  input/output hashes, counts, arguments and versions beside the outputs
- ``prompts``   prompt formats Axolotl applies (``context_qa.load_v2``)
- ``prepare_rg`` the RG-specific pipeline (``mixft prepare rg``)

Nothing here imports typer, torch or transformers at module level.
"""
