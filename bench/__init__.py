"""Benchmarks of the broker against the alternatives it replaces (issue 7).

`python -m bench.run` starts OpenBao, Redis, the development IdP and broker processes on
loopback, measures the hot path, a cold-cache stampede, refresh-ahead and the footprint,
prints the numbers and writes `docs/BENCHMARKS.md`.
"""
