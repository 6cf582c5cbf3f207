"""Benchmarks against the anchors, each printing its figures (last line: ``<name> key=value ...``).

Run one from the repository root as ``.venv/bin/python -m bench.<name>``; ``make bench`` runs them all.
"""
