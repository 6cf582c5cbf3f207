"""A file's identity in the stages' fingerprints: its name, size and modification time."""

from __future__ import annotations

from pathlib import Path


def file_id(p: str | Path | None) -> str:
    """``name:size:mtime_ns`` of the file at ``p``; ``<p>:missing`` where there is none."""
    if p is None or not Path(p).is_file():
        return f"{p}:missing"
    st = Path(p).stat()
    return f"{Path(p).name}:{st.st_size}:{st.st_mtime_ns}"
