"""The benchmarks, run from the repository root as modules: ``python -m benchmarks.<name> [options]``.

Each writes its tables to ``benchmarks/results/`` (or ``--out-dir``) through :mod:`benchmarks.common`.
"""
