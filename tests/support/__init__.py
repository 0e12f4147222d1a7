"""What the tests share: fixtures (loaded by ``pytest_plugins`` in ``tests/conftest.py``), helpers
that start real ``mixft`` processes and servers, and the CPU twin of a GPU training load.
``scripts/fault_injection.py`` and ``scripts/bench_generate.py`` use some of them too."""
