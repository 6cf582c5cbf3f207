"""``handdiffuse detect SESSION``: every camera of every sequence -> ``sequences/<seq>/keypoints2d.h5``.

Work items are *chunks*: (sequence, camera, a run of at most ``chunk_frames`` instants).
A 50-camera dome's minute-long 4K take is 50 x 2 chunks at the default size, so a
killed run loses at most one chunk per worker.

1. open the take (ingest checks every video against session.toml and refuses a short one
   unless ``--allow-short-videos``, then logs what it cost) and plan the chunks;
   a chunk whose result file is there with the same inputs (its video; the detector's whole
   configuration, ``detector_config``) is done already; one from other inputs is discarded
   and redone, with a log line
2. detect, chunks in parallel (processes here, or Ray tasks on a cluster: ``--executor``),
   frames read in batches of ``batch``: each
   chunk's raw hand candidates go to ``sequences/<seq>/.detect/<cam>-<first instant>.npz``
   (atomic), so a rerun redoes only the unfinished chunks
3. per camera, all its candidates in time order -> sides kept stable over time
   (``tracking``) -> (F, 42, 3) rows
4. write keypoints2d.h5 (all cameras, the instants every camera shows) with the inputs'
   fingerprint, drop the chunk files; with ``--overlay``, a PNG sheet of detections
   drawn on frames (``sequences/<seq>/overlays/detect.png``)

A sequence whose keypoints2d.h5 has the same fingerprint (videos' names, sizes and
mtimes, frame offsets and the instants kept; detector configuration and tracking options) is
skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from capture.detect.base import HandCandidate, to_rows
from capture.detect.dwpose import DWPoseConfig
from capture.detect.mediapipe import MediaPipeConfig
from capture.detect.tracking import MOTION_WEIGHT, track_sides
from data_schemas.atomic import atomic_path
from data_schemas.errors import SchemaError
from data_schemas.executor import Executor, ExecutorOptions, TaskResources
from data_schemas.file_id import file_id
from data_schemas.h5io import read_if_current
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d, write_keypoints2d
from data_schemas.lock import writing_all
from data_schemas.session import KEYPOINTS2D, SEQUENCE_DIR, Session

LOG = logging.getLogger("handdiffuse")
CHUNK_DIR = SEQUENCE_DIR + "/.detect"
OVERLAY = SEQUENCE_DIR + "/overlays/detect.png"


@dataclass
class DetectConfig(ExecutorOptions):
    """Detect 2D hand keypoints in every camera of every sequence -> keypoints2d.h5."""

    backend: Literal["mediapipe", "dwpose", "mmpose"] = "mediapipe"
    """Detector: mediapipe (bundled, offline), dwpose (ONNX weights from --dwpose.* paths) or
    mmpose (only where mmpose is installed)."""
    sequences: list[str] = field(default_factory=list)
    """Sequences to detect (default: all)."""
    workers: int = 2
    """Processes detecting chunks in parallel (one chunk each at a time); with --executor ray and
    no --ray-address, the CPUs of the local Ray cluster."""
    task_gpus: float = 0.25
    """--executor ray, GPU backends (dwpose, mmpose): the share of a GPU each chunk holds where the
    cluster has GPUs (MediaPipe runs on CPUs and asks for none)."""
    batch: int = 8
    """Frames decoded and passed to the detector at a time."""
    chunk_frames: int = 2000
    """Instants per work item; a killed run redoes at most one chunk per worker."""
    tracking: bool = True
    """Keep each hand's left/right identity stable over time within a camera."""
    motion_weight: float = MOTION_WEIGHT
    """Tracking: cost of a hand's motion between frames against handedness evidence."""
    overlay: bool = False
    """Also write sequences/<seq>/overlays/detect.png: detections drawn on sample frames."""
    allow_short_videos: bool = False
    """Where a camera's video is shorter than the others' (beyond what frame offsets explain), keep
    the instants every camera shows instead of refusing the sequence."""
    mediapipe: MediaPipeConfig = field(default_factory=MediaPipeConfig)
    dwpose: DWPoseConfig = field(default_factory=DWPoseConfig)
    mmpose_config: Path | None = None
    """mmpose backend: a whole-body top-down model config file."""
    mmpose_checkpoint: Path | None = None
    """mmpose backend: its checkpoint file."""


@dataclass
class Chunk:
    """A piece of work on one camera's video: ``instants`` (increasing, shown by every camera; for
    detect consecutive); ``key`` names its chunk file."""

    seq: str
    camera: str
    instants: list[int]

    @property
    def key(self) -> str:
        return f"{self.camera}-{self.instants[0]:06d}"


@dataclass
class SequenceSummary:
    name: str
    cameras: int
    frames: int
    chunks: int
    chunks_reused: int  # done by an earlier (interrupted) run
    found: float  # fraction of (camera, frame, hand) rows with a hand
    seconds: float
    skipped: bool = False
    overlay: Path | None = None

    @property
    def images_per_s(self) -> float:
        run = self.cameras * self.frames * (self.chunks - self.chunks_reused) / max(self.chunks, 1)
        return run / max(self.seconds, 1e-9)


def make_detector(cfg: DetectConfig):
    """The configured backend, ready to run (errors say what is missing)."""
    if cfg.backend == "mediapipe":
        from capture.detect.mediapipe import MediaPipeHands

        return MediaPipeHands(cfg.mediapipe)
    if cfg.backend == "dwpose":
        from capture.detect.dwpose import DWPose

        return DWPose(cfg.dwpose)
    if cfg.backend == "mmpose":
        from capture.detect.mmpose_backend import MMPoseHands

        try:
            return MMPoseHands(cfg.mmpose_config, cfg.mmpose_checkpoint)
        except ImportError as e:
            raise SchemaError("--backend mmpose", str(e)) from None
    raise ValueError(f"unknown backend {cfg.backend!r}")


def detector_config(cfg: DetectConfig) -> dict:
    """The whole resolved configuration of the detector: backend, every option of its config and its
    model files (name, size, mtime). What a chunk file's candidates depend on besides the video."""
    backend = {"mediapipe": cfg.mediapipe, "dwpose": cfg.dwpose, "mmpose": None}[cfg.backend]
    opts = dataclasses.asdict(backend) if backend is not None else {}
    models = [cfg.dwpose.det_model, cfg.dwpose.pose_model] if cfg.backend == "dwpose" else \
        [cfg.mmpose_config, cfg.mmpose_checkpoint] if cfg.backend == "mmpose" else []
    return {"backend": cfg.backend, "options": opts, "models": [file_id(m) for m in models]}


def detector_fingerprint(cfg: DetectConfig) -> str:
    """``detector_config`` as canonical JSON (not workers, batch, chunking or overlay)."""
    return json.dumps(detector_config(cfg), sort_keys=True, default=str)


def chunk_fingerprint(video: Path, cfg: DetectConfig, detector: str) -> str:
    """A chunk file's inputs: its video (name, size, mtime), the detector's whole configuration and
    its name (library version)."""
    doc = f"{file_id(video)}\n{detector}\n{detector_fingerprint(cfg)}"
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def sequence_fingerprint(session: Session, seq: str, cfg: DetectConfig, detector: str, instants: range) -> str:
    """keypoints2d.h5's inputs: every camera's video and frame offset, the instants kept, the detector
    (configuration and name) and the options applied to its candidates (tracking; chunking where
    MediaPipe's video mode restarts its tracker at every chunk)."""
    h = hashlib.sha256(detector_fingerprint(cfg).encode())
    h.update(f"{detector}\ntracking={cfg.tracking}:{cfg.motion_weight}\n".encode())
    if cfg.backend == "mediapipe" and cfg.mediapipe.video_mode:
        h.update(f"chunk_frames={cfg.chunk_frames}\n".encode())
    h.update(f"instants={instants.start}:{instants.stop}\n".encode())
    offsets = {c.name: c.frame_offset for c in session.config.cameras}
    for cam in session.cameras:
        h.update(f"{cam}={file_id(session.sequence_video(seq, cam))}:{offsets[cam]}\n".encode())
    return h.hexdigest()[:16]


# --- 2. one chunk -------------------------------------------------------------------------

_DETECTOR: tuple[str, object] | None = None  # this process's detector, kept between chunks


def _detector(cfg: DetectConfig):
    """One detector per process; MediaPipe's video mode tracks, so each chunk starts a fresh one."""
    global _DETECTOR
    key = detector_fingerprint(cfg)
    fresh = cfg.backend == "mediapipe" and cfg.mediapipe.video_mode
    if _DETECTOR is None or _DETECTOR[0] != key or fresh:
        if _DETECTOR is not None:
            _DETECTOR[1].close()
        _DETECTOR = (key, make_detector(cfg))
    return _DETECTOR[1]


def detect_chunk(root: Path, chunk: Chunk, cfg: DetectConfig) -> Path:
    """Detect hands in one chunk and save its candidates; returns the chunk file. Ray-ready."""
    from data_schemas.takes import open_take

    session = Session.open(root)
    take = open_take(session, chunk.seq, cfg.allow_short_videos)
    det = _detector(cfg)
    out = session.path(CHUNK_DIR, seq=chunk.seq) / f"{chunk.key}.npz"
    keypoints, logits, frame_of = [], [], []
    batch: list[np.ndarray] = []
    done = 0

    def flush() -> None:
        nonlocal done
        for i, cands in enumerate(det.candidates(batch)):
            for c in cands:
                keypoints.append(c.keypoints)
                logits.append(c.left_logit)
                frame_of.append(done + i)
        done += len(batch)
        batch.clear()

    for _, frame in take.read(chunk.camera, chunk.instants):
        batch.append(frame)
        if len(batch) >= cfg.batch:
            flush()
    if batch:
        flush()
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, keypoints=np.array(keypoints, np.float32).reshape(-1, 21, 3),  # (K, 21, 3)
                     left_logit=np.array(logits, np.float32), frame=np.array(frame_of, np.int64),
                     instants=np.array(chunk.instants, np.int64),
                     fingerprint=np.array(chunk_fingerprint(take.videos[chunk.camera].path, cfg, det.name)),
                     detector=np.array(detector_fingerprint(cfg)))
    return out


def _run_chunk(job: tuple) -> tuple[str, Path]:
    root, chunk, cfg = job
    return chunk.key, detect_chunk(root, chunk, cfg)


def _chunk_done(seq: str, key: str, frames: int, bar) -> None:
    LOG.debug("detected chunk %s of %s: %d frames", key, seq, frames)  # here, in the parent: workers do not log
    if bar is not None:
        bar.update(frames)


def _load_chunk(path: Path) -> tuple[np.ndarray, list[list[HandCandidate]], str]:
    """A chunk file -> (instants, candidates per instant, fingerprint)."""
    with np.load(path) as z:
        instants, kp, logit, frame = z["instants"], z["keypoints"], z["left_logit"], z["frame"]
        fp = str(z["fingerprint"])
    per: list[list[HandCandidate]] = [[] for _ in instants]
    for k, i in enumerate(frame):
        per[int(i)].append(HandCandidate(kp[k], float(logit[k])))
    return instants, per, fp


def _chunk_state(path: Path, chunk: Chunk, fp: str) -> Literal["missing", "done", "stale"]:
    """done: the chunk file is there with the same inputs; stale: it is there from other inputs (or
    damaged), to be redone; missing: not there."""
    if not path.is_file():
        return "missing"
    try:
        instants, _, old = _load_chunk(path)
    except Exception:  # a damaged chunk is redone
        return "stale"
    return "done" if old == fp and list(instants) == chunk.instants else "stale"


# --- the stage ------------------------------------------------------------------------------

def detect(root: str | Path, cfg: DetectConfig | None = None, progress: bool | None = None,
           executor: Executor | None = None) -> list[SequenceSummary]:
    """Detect every sequence of the session; chunks run on ``executor`` (default: local processes,
    ``cfg.workers`` of them; the CLI passes a ``pipeline.executors.RayExecutor`` for --executor ray).
    The sequences' folders are locked while it runs."""
    cfg = cfg or DetectConfig()
    session = Session.open(root)
    names = session.select_sequences(cfg.sequences, "detect")
    with writing_all([session.path(SEQUENCE_DIR, seq=s) for s in names], "detect"):
        return _detect(root, cfg, progress, executor)


def _detect(root: str | Path, cfg: DetectConfig, progress: bool | None,
            executor: Executor | None) -> list[SequenceSummary]:
    from data_schemas.takes import open_take

    executor = executor or cfg.local_executor(cfg.workers)
    if cfg.batch < 1 or cfg.chunk_frames < 1:
        raise SchemaError(root, "detect needs --batch >= 1 and --chunk-frames >= 1")
    session = Session.open(root)
    names = session.select_sequences(cfg.sequences, "detect")
    with make_detector(cfg) as probe:  # fails here, once, on missing weights or a bad config
        detector_name = probe.name
    summaries = []
    for seq in names:
        t0 = time.perf_counter()
        out = session.path(KEYPOINTS2D, seq=seq)
        take = open_take(session, seq, cfg.allow_short_videos)
        if (short := take.short_videos()) is not None:
            LOG.warning("detect %s: keeping the %d instants every camera shows (--allow-short-videos): %s",
                        seq, len(take.instants), short)
        instants = list(take.instants)
        fp = sequence_fingerprint(session, seq, cfg, detector_name, take.instants)
        chunk_dir = session.path(CHUNK_DIR, seq=seq)
        if (old := read_if_current(out, read_keypoints2d, fp)) is not None:
            shutil.rmtree(chunk_dir, ignore_errors=True)
            summaries.append(SequenceSummary(seq, len(old.cameras), len(old.frames), 0, 0,
                                             _found(old.keypoints), time.perf_counter() - t0, skipped=True))
            continue
        # 1.
        chunks = [Chunk(seq, cam, instants[i:i + cfg.chunk_frames])
                  for cam in session.cameras for i in range(0, len(instants), cfg.chunk_frames)]
        state = {c.key: _chunk_state(chunk_dir / f"{c.key}.npz", c,
                                     chunk_fingerprint(take.videos[c.camera].path, cfg, detector_name))
                 for c in chunks}
        todo = [c for c in chunks if state[c.key] != "done"]
        stale = sum(s == "stale" for s in state.values())
        if stale:
            LOG.warning("detect %s: %d chunk files of an earlier run with other videos or detector options "
                        "discarded", seq, stale)
        # 2.
        LOG.info("detect %s: %d chunks, %d done by an earlier run", seq, len(chunks), len(chunks) - len(todo))
        _run(session.root, todo, cfg, f"detect {seq}", progress, executor)
        # 3.
        rows = np.zeros((len(session.cameras), len(instants), 42, 3), np.float32)  # (C, F, 42, 3)
        for c, cam in enumerate(session.cameras):
            per_image: list[list[HandCandidate]] = []
            for ch in (x for x in chunks if x.camera == cam):
                _, per, _ = _load_chunk(chunk_dir / f"{ch.key}.npz")
                per_image += per
            rows[c] = track_sides(per_image, cfg.motion_weight) if cfg.tracking else to_rows(per_image)
        # 4.
        kp = Keypoints2D(session.cameras, [take.videos[c].size for c in session.cameras], np.array(instants),
                         rows, detector_name, session.config.fps, inputs=fp)
        write_keypoints2d(out, kp)
        shutil.rmtree(chunk_dir, ignore_errors=True)
        overlay = None
        if cfg.overlay:
            from capture.detect.overlay import write_overlay

            overlay = write_overlay(session.path(OVERLAY, seq=seq), take, kp)
        summaries.append(SequenceSummary(seq, len(session.cameras), len(instants), len(chunks),
                                         len(chunks) - len(todo), _found(rows), time.perf_counter() - t0,
                                         overlay=overlay))
    return summaries


def _found(keypoints: np.ndarray) -> float:
    """Fraction of (camera, frame, hand) with the hand found."""
    hands = keypoints[..., 2].reshape(*keypoints.shape[:2], 2, 21)  # (C, F, 2, 21)
    return float((hands > 0).any(axis=-1).mean()) if hands.size else 0.0


def _run(root: Path, todo: list[Chunk], cfg: DetectConfig, desc: str, progress: bool | None,
         executor: Executor) -> None:
    """Detect ``todo`` chunks on the executor, with a progress bar on a TTY."""
    if not todo:
        return
    jobs = [(root, c, cfg) for c in todo]
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(c.instants) for c in todo), desc=desc, unit="img")
    sizes = {c.key: len(c.instants) for c in todo}
    resources = TaskResources(cpus=1, gpus=0 if cfg.backend == "mediapipe" else cfg.task_gpus)
    try:
        for key, _ in executor.map_unordered(_run_chunk, jobs, resources):
            _chunk_done(todo[0].seq, key, sizes[key], bar)
    finally:
        if bar:
            bar.close()
