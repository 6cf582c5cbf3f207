"""Orchestration: the CLI (``cli``), executors (local; Ray), the demo and the figures of a synthetic
session against its truth (``demo``, ``versus_truth``), export, import, stats, sampling and the
session report."""
