"""The synthetic capture studio: a camera dome and its ground truth (the embedded default)."""
