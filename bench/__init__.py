"""Benchmarks of vaelm: `python -m bench.run --all | --quick | --only NAME` (see bench/run.py)."""
