"""The inference runner shared by ``mixft generate`` and ``mixft judge``.

- ``rows``: load a job's input rows and check the fields it needs, every problem at once.
- ``output``: the append-only, resumable output file (resume, retry of failed rows, torn tails).
- ``job``: ``run_job(JobOptions, RowBuilder)``, the one loop: rows -> requests -> backend ->
  appended rows -> manifest. ``generate.run`` and ``tc.judge`` are its two row builders.
"""
