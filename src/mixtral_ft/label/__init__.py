"""Human gold labels through Label Studio: sample responses, export them as labeling tasks (with a
judge's verdicts as pre-annotations), import the annotations back as verdicts, and measure how
well the annotators agree (docs/labeling.md).

- ``sample``: a seeded simple random sample of a responses file, and the gold-set size for a
  target interval width (``size``);
- ``config``: the labeling config (XML) and the names of its controls;
- ``export``: Label Studio tasks (``tasks.json``) with pre-annotations from judge verdicts;
- ``importer``: a Label Studio JSON export → version-1 verdicts, one gold row per item;
- ``agreement``: Cohen's kappa per field with an interval, span overlap for the mistakes;
- ``server``: the same through a running Label Studio (``label-studio-sdk``, imported lazily).
"""
