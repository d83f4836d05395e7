"""Patron's benchmarks: every figure next to an anchor measured in the same run.

``python -m benchmarks`` (``make bench``); see docs/benchmarks.md.
"""
