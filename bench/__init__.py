"""Benchmarks of the lab: suite wall time, scaling, receiver throughput, Docker start-up.

Run with `make bench` (or `python -m bench`); results go to `reports/bench/` as JSON and
Markdown. Never a timed unit test: `tests/test_bench.py` only checks the `--quick` output shape.
"""
