"""Checks shared by the readers and dataclass validators; each raises a one-line SchemaError."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data_schemas.errors import SchemaError


def check_shape(
    source: str | Path, name: str, a: np.ndarray, spec: tuple[int | str, ...], dims: dict[str, int]
) -> None:
    """Check ``a.shape`` against ``spec``; named dims must agree across calls sharing ``dims``."""
    want = "(" + ", ".join(str(s) for s in spec) + ")"
    if a.ndim != len(spec):
        raise SchemaError(source, f"'{name}' has shape {tuple(a.shape)}, expected {want}")
    for size, s in zip(a.shape, spec):
        if isinstance(s, int):
            if size != s:
                raise SchemaError(source, f"'{name}' has shape {tuple(a.shape)}, expected {want}")
        elif dims.setdefault(s, size) != size:
            raise SchemaError(
                source, f"'{name}' has shape {tuple(a.shape)}, expected {want} with {s}={dims[s]}"
            )


def check_finite(source: str | Path, name: str, a: np.ndarray, where: np.ndarray | None = None,
                 why: str = "") -> None:
    """No NaN/inf in ``a`` (restricted to ``where`` if given, broadcast over trailing axes)."""
    bad = ~np.isfinite(a)
    if where is not None:
        w = np.asarray(where, dtype=bool)
        while w.ndim < bad.ndim:
            w = w[..., None]
        bad &= w
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        suffix = f" {why}" if why else ""
        raise SchemaError(source, f"'{name}' has {int(bad.sum())} NaN/inf values{suffix} (first at index {first})")


def check_range(source: str | Path, name: str, a: np.ndarray, lo: float | None = None,
                hi: float | None = None) -> None:
    v = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    if v.size == 0:
        return
    if lo is not None and v.min() < lo:
        raise SchemaError(source, f"'{name}' has values below {lo} (min {v.min():.6g})")
    if hi is not None and v.max() > hi:
        raise SchemaError(source, f"'{name}' has values above {hi} (max {v.max():.6g})")


def as_array(source: str | Path, name: str, value: object, dtype: type | str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise SchemaError(source, f"'{name}' is not a numeric array ({e})")


def existing_file(path: str | Path, expected: str) -> Path:
    """``path`` as a Path, when it is a file; else one line: "file not found", or "is a folder,
    expected <expected>"."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(path, "file not found")
    if path.is_dir():
        raise SchemaError(path, f"is a folder, expected {expected}")
    return path


def load_toml(path: str | Path) -> dict:
    """A TOML file's document; a missing or malformed file is one line naming it."""
    return _load_text(path, "TOML", tomllib.loads, tomllib.TOMLDecodeError)


def load_json(path: str | Path) -> Any:
    """A JSON file's document; a missing or malformed file is one line naming it."""
    return _load_text(path, "JSON", json.loads, json.JSONDecodeError)


def _load_text(path: str | Path, kind: str, parse: Callable[[str], Any], error: type[Exception]) -> Any:
    path = existing_file(path, f"a {kind} file")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (error, UnicodeDecodeError) as e:
        raise SchemaError(path, f"not valid {kind} ({getattr(e, 'msg', None) or e})")
