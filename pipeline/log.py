"""Logging for the CLI: resolved config at start, one summary line at the end, to stderr."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

import toml

LOG = logging.getLogger("handdiffuse")


def setup_logging() -> None:
    level = os.environ.get("HANDDIFFUSE_LOG", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[handdiffuse] %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(getattr(logging, level, logging.INFO))
    LOG.propagate = False


def config_text(cfg: object) -> str:
    """A dataclass config as TOML, paths as strings."""
    def plain(v: object) -> object:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return toml.dumps(plain(dataclasses.asdict(cfg))).strip()  # type: ignore[arg-type]


def log_config(command: str, cfg: object) -> None:
    LOG.info("%s, resolved config:\n%s", command, config_text(cfg))
