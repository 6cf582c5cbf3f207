"""Video files of a session: writing (atomic) and reading frames in order.

Videos are MPEG-4 (``mp4v``) in ``.mp4`` containers through OpenCV's FFmpeg backend,
8-bit BGR frames, one file per camera.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

# FFmpeg and OpenCV print their own diagnostics on stderr (e.g. "moov atom not found" for a
# truncated file); our readers turn those conditions into one-line errors instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when the backend starts

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setLogLevel(2)  # errors only (OpenCV: 0 silent, 1 fatal, 2 error, 3 warning)

from data_schemas.atomic import PARTIAL_MARKER
from data_schemas.errors import SchemaError

FOURCC = "mp4v"


class VideoWriter:
    """Write frames to ``path``; the file appears there only when ``close`` succeeds.

    >>> with VideoWriter(path, fps=30, size=(640, 512)) as w:
    ...     w.write(frame_bgr)  # (H, W, 3) uint8
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.stem}{PARTIAL_MARKER}{os.getpid()}{self.path.suffix}")
        self._w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC), float(fps), self.size)
        if not self._w.isOpened():
            raise SchemaError(self.path, f"cannot open a {FOURCC} video writer")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.size[1], self.size[0], 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype}, expected ({self.size[1]}, {self.size[0]}, 3) uint8")
        self._w.write(frame)
        self.frames += 1

    def close(self) -> None:
        self._w.release()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._w.release()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_frames(path: str | Path) -> np.ndarray:
    """Every frame of a (small) video, (N, H, W, 3) uint8 BGR; for tests and tools."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SchemaError(path, "cannot open video")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
