"""Open every camera's video of one take, check it against session.toml, read frames in sync.

A *take* is one folder of videos, one per camera of ``session.toml``: the calibration
take ``calibration/videos/`` or a sequence ``sequences/{seq}/videos/``.

Sync convention. Time is counted in *instants*, the frame indices of the session
clock. Camera ``c`` started recording ``frame_offset`` frames out of step with the
session clock: its video frame ``i`` shows instant ``i - offset_c``, so instant ``t``
is its video frame ``t + offset_c``. Example, three videos of 20 frames::

    camera  frame_offset  video frames  instants shown
    cam00    0            0..19         0..19
    cam01    2            0..19         -2..17
    cam02   -3            0..19         3..22
                                        take.instants = range(3, 18), shown by every camera

Reading. A 50-camera dome records 4K videos of about a minute, so frames are read
forward and one at a time, never a whole video in memory: per ``Take.read`` call,
at most one seek (``CAP_PROP_POS_FRAMES``, checked to have landed), then ``grab()``
over the frames not asked for and ``retrieve()`` (colour conversion) only for those
asked for.

Truncated or corrupt files (OpenCV 4.12, FFmpeg backend):

* an MP4/MOV cut short (an interrupted recording or copy) does not open at all:
  OpenCV writes the ``moov`` index box last, FFmpeg needs it to open the file and
  logs "moov atom not found". ``probe`` then walks the file's top-level boxes to say
  so instead of "not a video".
* an MKV cut short, or an MP4 with damaged bytes inside, opens and reports its full
  frame count, but ``grab()`` fails at the first frame it cannot decode. ``Take.read``
  and ``Take.check_decodable`` turn that into
  ``<video>: video is corrupt or truncated: decoded 37 of 120 frames``.

``n_frames`` is what the container reports; only decoding (``check_decodable``)
proves that the frames are there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import data_schemas.video  # noqa: F401  (quiets FFmpeg and OpenCV logging before any capture opens)
import cv2
import numpy as np

from data_schemas.errors import SchemaError
from data_schemas.session import CALIBRATION_VIDEOS, SEQUENCE_VIDEOS, SESSION_TOML, VIDEO_EXTENSIONS, Session

FPS_TOLERANCE = 0.01  # frames per second a video may differ from [session] fps


@dataclass(frozen=True)
class VideoInfo:
    """What a video file reports about itself (nothing decoded yet)."""

    path: Path
    n_frames: int  # frame count reported by the container
    fps: float
    size: tuple[int, int]  # (width, height) px


def _open_capture(path: Path) -> cv2.VideoCapture:
    # FFmpeg only: other backends would, e.g., read a name with "%d" as an image sequence.
    return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)


def _mp4_truncation(path: Path) -> str | None:
    """Why an MP4/MOV file is incomplete, or None if it is not one or looks whole.

    An ISO base media file (MP4, MOV) is a chain of top-level boxes, each starting
    with a 4-byte big-endian size and a 4-byte type; size 1 means a 64-bit size
    follows, size 0 means "to the end of the file".
    """
    file_size = path.stat().st_size
    types: list[str] = []
    with path.open("rb") as f:
        pos = 0
        while pos < file_size:
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return f"the file has {file_size} bytes and ends inside an MP4 box header"
            box_size = int.from_bytes(header[:4], "big")
            box_type = header[4:8].decode("latin-1")
            if not box_type.isascii() or not box_type.isprintable() or (pos == 0 and box_type != "ftyp"):
                return None  # not an ISO base media file (or garbage we should not explain)
            if box_size == 1:
                if len(header) < 16:
                    return f"the file has {file_size} bytes and ends inside an MP4 box header"
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = file_size - pos
            if box_size < 8:
                return None
            types.append(box_type)
            if pos + box_size > file_size:
                return f"the file has {file_size} bytes but its MP4 '{box_type}' box ends at byte {pos + box_size}"
            pos += box_size
    if "moov" not in types:
        return "it has no MP4 'moov' box (the index, written when recording stops)"
    return None


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its frame count, fps and frame size; SchemaError if it is no usable video."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(path, "file not found")
    cap = _open_capture(path)
    try:
        if not cap.isOpened():
            truncation = _mp4_truncation(path)
            if truncation is not None:
                raise SchemaError(path, f"video is corrupt or truncated: cannot open it, {truncation}")
            raise SchemaError(path, "cannot open video (not a video file or unsupported codec)")
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()
    if n_frames <= 0:
        raise SchemaError(path, f"video reports {n_frames} frames")
    if size[0] <= 0 or size[1] <= 0:
        raise SchemaError(path, f"video reports a frame size of {size[0]}x{size[1]}")
    return VideoInfo(path=path, n_frames=n_frames, fps=fps, size=size)


def _corrupt(info: VideoInfo, decoded: int) -> SchemaError:
    return SchemaError(info.path, f"video is corrupt or truncated: decoded {decoded} of {info.n_frames} frames")


def _fps(fps: float) -> str:
    return f"{round(fps, 3):g}"


@dataclass
class Take:
    """One take's videos, one per camera of the session, checked against session.toml."""

    folder: Path  # calibration/videos or sequences/{seq}/videos
    cameras: list[str]  # session order
    videos: dict[str, VideoInfo]  # camera -> its video
    frame_offsets: dict[str, int]  # camera -> frame_offset: video frame i shows instant i - offset

    @property
    def frame_counts(self) -> dict[str, int]:
        """Frames per camera, as the videos report them."""
        return {c: self.videos[c].n_frames for c in self.cameras}

    def camera_instants(self, camera: str) -> range:
        """The instants camera ``camera``'s video shows: frames 0..n-1 are instants -offset..n-1-offset."""
        offset = self.frame_offsets[camera]
        return range(-offset, self.videos[camera].n_frames - offset)

    @property
    def instants(self) -> range:
        """The instants every camera's video shows (the intersection of ``camera_instants``)."""
        first = max(self.cameras, key=lambda c: self.camera_instants(c).start)
        last = min(self.cameras, key=lambda c: self.camera_instants(c).stop)
        shown = range(self.camera_instants(first).start, self.camera_instants(last).stop)
        if len(shown) == 0:
            raise SchemaError(
                self.folder,
                f"no instant is shown by every camera: '{first}' starts at instant {shown.start} "
                f"(frame_offset {self.frame_offsets[first]} in {SESSION_TOML}) but '{last}' ends at instant "
                f"{shown.stop - 1} ({self.videos[last].n_frames} frames, frame_offset {self.frame_offsets[last]})",
            )
        return shown

    def short_cameras(self) -> list[str]:
        """Cameras whose video is short: it lacks instants the others show, beyond what frame offsets explain.

        Offsets shift a camera's instants, so its last instant may differ from the others' while
        its video is as long as theirs (same length, shifted), or while it stops with them (it
        started late, so its video is shorter). A video is short when it has fewer frames than
        the typical camera's (the upper median of the frame counts) and also ends before the
        instants every camera of that typical length or longer shows: a copy or recording cut
        short.
        """
        counts = sorted(self.frame_counts.values())
        typical = counts[len(counts) // 2]  # upper median: with one short camera of two, the other's
        end = min(self.camera_instants(c).stop for c in self.cameras if self.videos[c].n_frames >= typical)
        return [c for c in self.cameras
                if self.videos[c].n_frames < typical and self.camera_instants(c).stop < end]

    def short_videos(self) -> str | None:
        """What the short videos (``short_cameras``) cost the take, in one line; None if none is short."""
        short = self.short_cameras()
        if not short:
            return None
        c = short[0]
        others = {self.videos[d].n_frames for d in self.cameras if d not in short}
        typical = sorted(self.frame_counts.values())[len(self.cameras) // 2]
        whose = f"the other cameras have {typical}" if len(others) == 1 else f"most cameras have {typical}"
        more = f" (and {len(short) - 1} more short camera{'s' if len(short) > 2 else ''})" if len(short) > 1 else ""
        start = max(self.camera_instants(d).start for d in self.cameras)
        full = range(start, min(self.camera_instants(d).stop for d in self.cameras if d not in short))
        kept = self.instants
        return (f"camera '{c}' has {self.videos[c].n_frames} frames where {whose}{more}: every camera shows only "
                f"{len(kept)} instants ({kept.start}..{kept.stop - 1}) instead of {len(full)} "
                f"({full.start}..{full.stop - 1})")

    def read(self, camera: str, instants: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(instant, frame)`` of camera ``camera`` for strictly increasing ``instants``.

        ``frame`` is (H, W, 3) uint8 BGR, video frame ``instant + frame_offset``. Decodes
        forward from at most one seek, so a sparse or dense set costs one pass over the
        video up to its last instant. SchemaError if the video stops decoding early.
        """
        info = self.videos[camera]
        offset = self.frame_offsets[camera]
        shown = self.camera_instants(camera)
        cap = _open_capture(info.path)
        if not cap.isOpened():
            raise SchemaError(info.path, "cannot open video (not a video file or unsupported codec)")
        pos = 0  # index of the video frame the next grab() decodes
        seeked = False
        previous: int | None = None
        try:
            for instant in instants:
                instant = int(instant)
                if previous is not None and instant <= previous:
                    raise ValueError(f"instants must be strictly increasing, got {instant} after {previous}")
                if instant not in shown:
                    raise ValueError(f"instant {instant} is not shown by camera '{camera}' "
                                     f"(it shows {shown.start}..{shown.stop - 1})")
                i = instant + offset  # video frame showing this instant
                # 1. The first frame: one seek, kept only if it landed where asked (a seek
                #    into damaged data stops short); otherwise start again and decode forward.
                if previous is None and i > 0:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                    if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == i:
                        pos, seeked = i, True
                    else:
                        cap.release()
                        cap = _open_capture(info.path)
                previous = instant
                # 2. Skip to frame i without colour conversion, then decode it.
                while pos <= i:
                    if not cap.grab():
                        raise self._decode_error(camera, pos, seeked)
                    pos += 1
                ok, frame = cap.retrieve()
                if not ok:
                    raise self._decode_error(camera, i, seeked)
                yield instant, frame
        finally:
            cap.release()

    def read_all(self, instants: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(instant, {camera: frame})`` for strictly increasing ``instants`` in ``self.instants``.

        Keeps one open decoder per camera, so memory grows with the number of cameras
        (fine for a few; for the 50-camera 4K dome loop over cameras with ``read``).
        """
        instants = list(instants)
        readers = {c: self.read(c, instants) for c in self.cameras}
        try:
            for instant in instants:
                frames = {}
                for camera, reader in readers.items():
                    _, frames[camera] = next(reader)  # each reader yields exactly these instants
                yield instant, frames
        finally:
            for reader in readers.values():
                reader.close()

    def check_decodable(self, camera: str) -> None:
        """Decode (grab only, no colour conversion) every frame of ``camera``'s video; SchemaError if one fails."""
        info = self.videos[camera]
        cap = _open_capture(info.path)
        try:
            for i in range(info.n_frames):
                if not cap.grab():
                    raise _corrupt(info, i)
        finally:
            cap.release()

    def _decode_error(self, camera: str, frame: int, seeked: bool) -> SchemaError:
        """The error for a frame that did not decode; after a seek, count the decodable frames from the start."""
        if not seeked:
            return _corrupt(self.videos[camera], frame)
        try:
            self.check_decodable(camera)
        except SchemaError as e:
            return e
        return SchemaError(self.videos[camera].path,
                           f"video is corrupt or truncated: frame {frame} of {self.videos[camera].n_frames} "
                           "does not decode after a seek")


def open_take(session: Session, take: str | None, allow_short_videos: bool = False) -> Take:
    """The videos of ``take`` (a sequence name; None for the calibration take), checked against session.toml.

    Every camera must have a video (``{cam}`` + one of VIDEO_EXTENSIONS) with the
    session's fps and the camera's width x height, and some instant must be shown by
    every camera. A short video (``Take.short_cameras``) would cut every camera to the
    instants it shows: refused unless ``allow_short_videos``, the caller then saying so
    (``Take.short_videos``). Only headers are read; ``Take.check_decodable`` decodes.
    """
    folder = session.root / CALIBRATION_VIDEOS if take is None else session.path(SEQUENCE_VIDEOS, seq=take)
    fps = float(session.config.fps)
    videos: dict[str, VideoInfo] = {}
    for spec in session.config.cameras:
        path = session.video(folder, spec.name)
        if path is None:
            raise SchemaError(folder / f"{spec.name}{VIDEO_EXTENSIONS[0]}", f"video of camera '{spec.name}' not found")
        info = probe(path)
        if abs(info.fps - fps) > FPS_TOLERANCE:
            raise SchemaError(path, f"fps is {_fps(info.fps)} but {SESSION_TOML} [session] fps is {_fps(fps)}")
        if info.size != (spec.width, spec.height):
            raise SchemaError(path, f"frame size is {info.size[0]}x{info.size[1]} but {SESSION_TOML} gives "
                                    f"camera '{spec.name}' {spec.width}x{spec.height}")
        videos[spec.name] = info
    result = Take(folder=folder, cameras=session.cameras, videos=videos,
                  frame_offsets={c.name: c.frame_offset for c in session.config.cameras})
    _ = result.instants  # raises SchemaError if no instant is shown by every camera
    short = result.short_videos()
    if short is not None and not allow_short_videos:
        raise SchemaError(videos[result.short_cameras()[0]].path,
                          f"{short}; pass --allow-short-videos to keep those {len(result.instants)}")
    return result
