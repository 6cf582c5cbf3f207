"""The session folder: where every stage reads and writes, and ``session.toml``.

Layout (path templates below; ``{seq}`` a sequence folder name, ``{cam}`` a camera; each a plain
name, and ``Session.path`` refuses a path that leads out of the session folder)::

    session/
      session.toml                           rig + capture metadata (SessionConfig)
      calibration/videos/{cam}.mp4           board videos
      calibration/calibration.toml           <- calibrate (anipose format)
      sequences/{seq}/videos/{cam}.mp4       hand videos
      sequences/{seq}/keypoints2d.h5         <- detect
      sequences/{seq}/keypoints2d_manual.h5  <- merge (manual 2D annotation)
      sequences/{seq}/joints3d.h5            <- triangulate
      sequences/{seq}/mano.h5                <- fit (+ per-frame quality)
      annotation/queue.jsonl                 <- queue (frames that failed)
      annotation/labelstudio/                Label Studio data dir (annotate)
      export/shard-00000.h5, manifest.parquet  <- export
      export/stats/stats.json (+ PNG plots)  <- stats
      report/index.html                      <- report
      ground_truth/                          synthetic sessions only; read by evaluation alone

``session.toml``::

    [session]
    name = "demo"                # required
    fps = 30.0                   # required, frames per second of every video
    subject = "subject-01"
    capture_date = "2026-11-25"

    [board]                      # ChArUco board of the calibration takes
    squares_x = 7                # squares along x
    squares_y = 5
    square_length = 0.04         # metres
    marker_length = 0.03         # metres, < square_length
    dictionary = "DICT_5X5_100"  # an OpenCV aruco dictionary name
    legacy_pattern = false       # boards made by OpenCV < 4.6

    [[cameras]]                  # one per camera, in rig order
    name = "cam00"
    width = 3840
    height = 2160
    frame_offset = 0             # this camera's frame i shows the instant of frame i - offset

    [sequences.seq000]           # optional metadata per sequence folder
    category = "interlock"
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import toml

from data_schemas.atomic import atomic_write_text, is_partial
from data_schemas.calibration import CameraRig, read_calibration
from data_schemas.checks import load_toml
from data_schemas.errors import SchemaError
from data_schemas.paths import check_name, inside

SESSION_TOML = "session.toml"
CALIBRATION_VIDEOS = "calibration/videos"
CALIBRATION_TOML = "calibration/calibration.toml"
SEQUENCES = "sequences"
SEQUENCE_DIR = "sequences/{seq}"
SEQUENCE_VIDEOS = "sequences/{seq}/videos"
KEYPOINTS2D = "sequences/{seq}/keypoints2d.h5"
KEYPOINTS2D_MANUAL = "sequences/{seq}/keypoints2d_manual.h5"
KEYPOINTS2D_GUIDED = "sequences/{seq}/keypoints2d_guided.h5"
JOINTS3D = "sequences/{seq}/joints3d.h5"
MANO = "sequences/{seq}/mano.h5"
QUEUE = "annotation/queue.jsonl"
LABELSTUDIO_DIR = "annotation/labelstudio"
EXPORT_DIR = "export"
MANIFEST = "export/manifest.parquet"
STATS = "export/stats/stats.json"
REPORT = "report/index.html"
GROUND_TRUTH = "ground_truth"

# Input folders that may be symlinks to storage outside the session (stages only read them).
INPUT_LINKS = (SEQUENCE_VIDEOS,)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
SEQUENCE_OUTPUTS = {"keypoints2d": KEYPOINTS2D, "keypoints2d_manual": KEYPOINTS2D_MANUAL,
                    "keypoints2d_guided": KEYPOINTS2D_GUIDED, "joints3d": JOINTS3D, "mano": MANO}

ARUCO_DICTIONARIES = tuple(
    [f"DICT_{n}X{n}_{k}" for n in (4, 5, 6, 7) for k in (50, 100, 250, 1000)]
    + ["DICT_ARUCO_ORIGINAL", "DICT_ARUCO_MIP_36h12"]
    + [f"DICT_APRILTAG_{t}" for t in ("16h5", "25h9", "36h10", "36h11")]
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_KW_NAMES = {"seq": "sequence", "cam": "camera"}  # template field -> the name in messages


@dataclass
class BoardSpec:
    squares_x: int = 7
    squares_y: int = 5
    square_length: float = 0.04  # m
    marker_length: float = 0.03  # m
    dictionary: str = "DICT_5X5_100"
    legacy_pattern: bool = False


@dataclass
class CameraSpec:
    name: str
    width: int
    height: int
    frame_offset: int = 0


@dataclass
class SessionConfig:
    name: str
    fps: float
    cameras: list[CameraSpec]
    board: BoardSpec = field(default_factory=BoardSpec)
    subject: str = ""
    capture_date: str = ""
    sequences: dict[str, dict] = field(default_factory=dict)  # per-sequence metadata

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def validate(self, source: str | Path) -> None:
        for k in ("name", "subject", "capture_date"):
            v = getattr(self, k)
            if isinstance(v, (_dt.date, _dt.time)):  # tomllib reads an unquoted 2026-11-25 as a date
                raise SchemaError(source, f'[session] {k} = {v.isoformat()} is a TOML date, not a string: quote it, '
                                          f'{k} = "{v.isoformat()}"')
            if not isinstance(v, str):
                raise SchemaError(source, f"[session] {k} must be a string, got {v!r}")
        if not self.name:
            raise SchemaError(source, "[session] name is empty")
        if not (isinstance(self.fps, (int, float)) and self.fps > 0):
            raise SchemaError(source, f"[session] fps must be a positive number, got {self.fps!r}")
        if not self.cameras:
            raise SchemaError(source, "no [[cameras]]")
        seen: set[str] = set()
        for i, c in enumerate(self.cameras):
            if not isinstance(c.name, str) or not _NAME_RE.match(c.name):
                raise SchemaError(source, f"[[cameras]] #{i}: name {c.name!r} must match [A-Za-z0-9_.-]+")
            if c.name in seen:
                raise SchemaError(source, f"camera name '{c.name}' appears twice")
            seen.add(c.name)
            for k in ("width", "height"):
                v = getattr(c, k)
                if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                    raise SchemaError(source, f"camera '{c.name}': {k} must be a positive integer, got {v!r}")
            if isinstance(c.frame_offset, bool) or not isinstance(c.frame_offset, int):
                raise SchemaError(source, f"camera '{c.name}': frame_offset must be an integer")
        b = self.board
        for k in ("squares_x", "squares_y"):
            v = getattr(b, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise SchemaError(source, f"[board] {k} must be an integer >= 2, got {v!r}")
        for k in ("square_length", "marker_length"):
            v = getattr(b, k)
            if not isinstance(v, (int, float)) or v <= 0:
                raise SchemaError(source, f"[board] {k} must be a positive length in metres, got {v!r}")
        if b.marker_length >= b.square_length:
            raise SchemaError(source, "[board] marker_length must be smaller than square_length")
        if b.dictionary not in ARUCO_DICTIONARIES:
            raise SchemaError(source, f"[board] unknown dictionary {b.dictionary!r} (e.g. DICT_5X5_100)")
        for seq in self.sequences:
            if not _NAME_RE.match(seq):
                raise SchemaError(source, f"[sequences.{seq}]: name must match [A-Za-z0-9_.-]+")


def _take(table: dict, cls: type, where: str, source: Path) -> dict:
    known = {f for f in cls.__dataclass_fields__}
    unknown = [k for k in table if k not in known]
    if unknown:
        raise SchemaError(source, f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return table


def read_session_toml(path: str | Path) -> SessionConfig:
    path = Path(path)
    doc = load_toml(path)
    unknown = [k for k in doc if k not in ("session", "board", "cameras", "sequences")]
    if unknown:
        raise SchemaError(path, f"unknown table [{unknown[0]}] (known: session, board, cameras, sequences)")
    if "session" not in doc:
        raise SchemaError(path, "missing [session] table")
    s = dict(doc["session"])
    allowed = {"name", "fps", "subject", "capture_date"}
    bad = [k for k in s if k not in allowed]
    if bad:
        raise SchemaError(path, f"[session]: unknown key {bad[0]!r} (known: {', '.join(sorted(allowed))})")
    for k in ("name", "fps"):
        if k not in s:
            raise SchemaError(path, f"[session] is missing '{k}'")
    cams = doc.get("cameras", [])
    if not isinstance(cams, list):
        raise SchemaError(path, "'cameras' must be an array of tables [[cameras]]")
    cameras = []
    for i, c in enumerate(cams):
        _take(c, CameraSpec, f"[[cameras]] #{i}", path)
        missing = [k for k in ("name", "width", "height") if k not in c]
        if missing:
            raise SchemaError(path, f"[[cameras]] #{i} is missing '{missing[0]}'")
        cameras.append(CameraSpec(**c))
    board = BoardSpec(**_take(doc.get("board", {}), BoardSpec, "[board]", path))
    seqs = doc.get("sequences", {})
    cfg = SessionConfig(cameras=cameras, board=board, sequences=seqs, **s)
    cfg.validate(path)
    return cfg


def write_session_toml(path: str | Path, cfg: SessionConfig) -> None:
    cfg.validate(path)
    parts = [  # one dumps per table keeps the documented order: session, board, cameras, sequences
        {"session": {"name": cfg.name, "fps": float(cfg.fps), "subject": cfg.subject,
                     "capture_date": cfg.capture_date}},
        {"board": asdict(cfg.board)},
        {"cameras": [asdict(c) for c in cfg.cameras]},
    ]
    if cfg.sequences:
        parts.append({"sequences": cfg.sequences})
    atomic_write_text(path, "\n".join(toml.dumps(p) for p in parts))


@dataclass
class Session:
    """An opened session folder: its config, and what exists in it."""

    root: Path
    config: SessionConfig

    @classmethod
    def open(cls, path: str | Path) -> "Session":
        root = Path(path)
        if not root.is_dir():
            raise SchemaError(root, "session folder not found")
        return cls(root=root, config=read_session_toml(root / SESSION_TOML))

    @staticmethod
    def find_root(path: str | Path) -> Path | None:
        """The session folder containing ``path`` (a folder with session.toml), if any."""
        p = Path(path).resolve()
        for folder in [p] + list(p.parents):
            if (folder / SESSION_TOML).is_file():
                return folder
        return None

    def path(self, template: str, **kw: str) -> Path:
        """``root / template`` filled with ``kw``: each value one plain name (``paths.check_name``),
        the path inside the session folder with every symlink followed (``paths.inside``)."""
        where = self.root / template.split("{", 1)[0].rstrip("/")
        for k, v in kw.items():
            check_name(v, where, _KW_NAMES.get(k, k))
        rel = template.format(**kw)
        if template in INPUT_LINKS:  # raw footage may live on another disk: confine the folder above
            parent, name = rel.rsplit("/", 1)
            return inside(self.root, parent, where) / name
        return inside(self.root, rel, where)

    @property
    def cameras(self) -> list[str]:
        return self.config.camera_names

    @property
    def sequences(self) -> list[str]:
        """Sequence folders under ``sequences/``, sorted."""
        d = self.root / SEQUENCES
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def select_sequences(self, names: list[str], stage: str) -> list[str]:
        """``names`` (a --sequences option; empty: every sequence), each a plain name that exists;
        SchemaError names the first that is not."""
        for s in names:
            check_name(s, "--sequences", "sequence")
        names = list(names) or self.sequences
        unknown = [s for s in names if s not in self.sequences]
        if unknown:
            raise SchemaError(self.path(SEQUENCE_DIR, seq=unknown[0]), "sequence folder not found")
        if not names:
            raise SchemaError(self.root / SEQUENCES, f"no sequences to {stage}")
        return names

    def video(self, folder: Path, camera: str) -> Path | None:
        for ext in VIDEO_EXTENSIONS:
            p = folder / f"{camera}{ext}"
            if p.is_file():
                return p
        return None

    def sequence_video(self, seq: str, camera: str) -> Path | None:
        return self.video(self.path(SEQUENCE_VIDEOS, seq=seq), camera)

    def calibration_video(self, camera: str) -> Path | None:
        return self.video(self.root / CALIBRATION_VIDEOS, camera)

    def load_calibration(self) -> CameraRig:
        """The calibration of this session's cameras, in session order; every camera must be there."""
        path = self.root / CALIBRATION_TOML
        rig = read_calibration(path)
        missing = [c for c in self.cameras if c not in rig.names]
        if missing:
            raise SchemaError(path, f"camera '{missing[0]}' (in {SESSION_TOML}) is missing from the calibration")
        return rig.subset(self.cameras, path)

    def stage_outputs(self) -> dict:
        """Which stage outputs exist: {'calibration': bool, 'sequences': {seq: {name: bool}}, ...}."""
        def done(p: Path) -> bool:
            return p.is_file() and not is_partial(p)

        return {
            "calibration": done(self.root / CALIBRATION_TOML),
            "sequences": {
                s: {k: done(self.path(t, seq=s)) for k, t in SEQUENCE_OUTPUTS.items()} for s in self.sequences
            },
            "queue": done(self.root / QUEUE),
            "export": sorted(p.name for p in (self.root / EXPORT_DIR).glob("shard-*.h5")),
        }
