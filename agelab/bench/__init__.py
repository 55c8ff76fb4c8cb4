"""Benchmarks: ``python -m agelab.bench <subcommand> ...`` (see agelab/bench/__main__.py)."""
