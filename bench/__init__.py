"""Benchmarks, run by hand: `python -m bench.NAME --json`. They print JSON; nothing here is a test."""
