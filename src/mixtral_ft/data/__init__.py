"""What prepared data looks like, for every stage that builds or reads it.

- ``normalize`` whitespace + Unicode NFC, snippet joining, content keys
- ``prompts``   prompt formats Axolotl applies (``context_qa.load_v2``)
- ``lengths``   token lengths exactly as Axolotl builds instruction-style examples; the report
- ``manifest``  input/output hashes, counts, arguments and versions beside the outputs

``mixft prepare`` itself is ``mixtral_ft.prepare``. Nothing here imports typer, torch or
transformers at module level.
"""
