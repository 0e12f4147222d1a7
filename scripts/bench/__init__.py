"""Measurement harnesses the scripts in ``scripts/`` run (and the tests pin); not part of ``mixft``.

- ``membench``: training memory and throughput per layer count through ``mixft train --probe``
  (``scripts/bench_train.py``, ``make bench-train``);
- ``stepbench``: the same steps in one process per layer count, every case on one loaded model, beside
  ``mixft plan`` for the same configs, for a bare GPU machine (``make gpu-check``);
- ``gpucheck``: the parts of ``make gpu-check`` and its summary (``scripts/gpu_check.py``);
- ``wheelhouse``: the wheels a bare GPU machine lacks, slimmed and packed into parts, and their installer;
- ``router_aux``: whether Mixtral's router auxiliary loss reaches LoRA, per checkpointing mode
  (``scripts/measure_router_aux.py``);
- ``expert_lora``: what LoRA on the fused experts materialises in one layer at Mixtral widths
  (``scripts/measure_expert_lora.py``; the planner's ``plan/expert_lora.py`` term).

A script run as ``python scripts/NAME.py`` finds this package beside it; pytest finds it through
``pythonpath`` in ``pyproject.toml``.
"""
