"""``handdiffuse redetect SESSION``: the hands detected again where the first fit says to look ->
``sequences/<seq>/keypoints2d_guided.h5``; then ``triangulate`` and ``fit`` run again on the
combined evidence (the triangulate stage reads the file).

The palm detector misses hands that touch, cover or cross each other, and finds one hand where
there are two; the fit of the first pass knows where both are. So, per sequence:

1. plan (``plan_views``): project each fitted hand (mano.h5's joints) into every camera; a hand in
   a view is re-detected where the fit puts it in the image and the first detection
   (keypoints2d.h5) misses it (``MISSING``), has it in the other hand's slot (``SWAPPED``),
   disagrees with the fit's projection by more than ``--disagree`` x the hand's size
   (``DISAGREES``), or where the two hands' projected boxes overlap (``OVERLAP``)
2. re-detect, in chunks of (camera, up to ``--chunk-frames`` planned instants), on the executor:
   pose both fitted meshes (``hand_model.posing``); per view, what the camera sees of them
   (``hand_model.visibility``: z-buffer of both meshes; per joint visible, or hidden by the other
   hand or its own); per planned hand, the other hand's pixels painted over with the
   background's colour where it is in front (``mask_other_hand``), the crop MediaPipe tracks with,
   from the projected fitted joints (``roi.hand_roi``), and the landmark model on it without the
   palm detector (``landmarks.HandLandmarks``). Each chunk's results go to
   ``sequences/<seq>/.redetect/<cam>-<first instant>.npz`` (atomic): a rerun redoes only the
   unfinished chunks
3. assemble: a hand the model finds (presence >= ``--min-presence``) where the fit put it (mean
   distance to the fit's projection under ``--max-off-fit`` x the hand's size: further off, the model
   found something else in the crop) replaces the first detection (``redetected``); its joints
   hidden by the other hand leave the evidence (score 0), as do those it places outside the image;
   elsewhere the first detection stands
4. write keypoints2d_guided.h5 (the keypoints2d format: same cameras and frames as keypoints2d.h5,
   ``detector`` the landmark model, ``redetected`` per view and hand), drop the chunk files

The file is current, and the sequence skipped, when it was made with these options from the same
keypoints2d.h5, videos and calibration, and from the current mano.h5 or an earlier one (mano.h5
written after it is the fit on its evidence); ``--again`` re-detects from the current fit anyway.
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

import cv2
import numpy as np

from capture.detect.base import hand_boxes_overlap, in_image
from capture.detect.roi import SCALE, SHIFT, hand_roi
from capture.detect.stage import Chunk as VideoChunk
from data_schemas.atomic import atomic_path
from data_schemas.calibration import CameraRig, read_calibration
from data_schemas.errors import SchemaError
from data_schemas.executor import Executor, ExecutorOptions, TaskResources
from data_schemas.file_id import file_id
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.keypoints2d import Keypoints2D, guided_inputs, made_from, read_keypoints2d, write_keypoints2d
from data_schemas.lock import writing_all
from data_schemas.mano import ManoFit, read_mano
from data_schemas.session import CALIBRATION_TOML, KEYPOINTS2D, KEYPOINTS2D_GUIDED, MANO, SEQUENCE_DIR, Session
from hand_model.visibility import HIDDEN_BY_OTHER, JOINT_DEPTH_TOLERANCE, OUTSIDE, HandsInView

LOG = logging.getLogger("handdiffuse")
CHUNK_DIR = SEQUENCE_DIR + "/.redetect"
MISSING, SWAPPED, DISAGREES, OVERLAP = 1, 2, 4, 8  # why a hand in a view is re-detected (bit flags)
REASONS = {"missing": MISSING, "swapped": SWAPPED, "disagrees": DISAGREES, "overlap": OVERLAP}
MIN_FOUND = 11  # a first detection with fewer found joints (half a hand) counts as missing


@dataclass
class RedetectOptions:
    """What keypoints2d_guided.h5 depends on besides its input files."""

    model_complexity: int = 1
    """Landmark model: 0 (lite, faster) or 1 (full)."""
    roi_scale: float = SCALE
    """Crop side over the size of the hand's stable joints (MediaPipe tracks with 2)."""
    roi_shift: float = SHIFT
    """Crop centre shifted towards the fingers by this x the stable joints' height (MediaPipe: -0.1)."""
    min_presence: float = 0.5
    """The landmark model's hand-presence score from which a re-detected hand is kept."""
    max_off_fit: float = 0.35
    """Keep a re-detected hand only within this x the hand's size of the fit's projection (mean over
    its joints)."""
    disagree: float = 0.2
    """Re-detect a hand whose first detection lies further from the fit's projection than this x the
    hand's size in the image (mean over its joints)."""
    overlap_margin: float = 0.1
    """The two hands' projected joint boxes, each grown by this x its size, overlap: re-detect both."""
    mask: bool = True
    """Paint the other hand over where the fit puts it in front (else the crop as it is)."""
    mask_grow: float = 0.04
    """The painted region grows by this x the hand's size (the fit is a few mm off)."""
    occlusion_tolerance: float = JOINT_DEPTH_TOLERANCE
    """A joint is hidden when a surface lies this far (m) in front of it at its pixel."""


@dataclass
class RedetectConfig(RedetectOptions, ExecutorOptions):
    """Detect the hands again in crops from the first fit, aware of which hand is in front ->
    sequences/<seq>/keypoints2d_guided.h5 (then triangulate and fit again)."""

    sequences: list[str] = field(default_factory=list)
    """Sequences to re-detect (default: all)."""
    workers: int = 2
    """Processes re-detecting chunks in parallel (one chunk each at a time)."""
    chunk_frames: int = 2000
    """Planned instants per work item; a killed run redoes at most one chunk per worker."""
    again: bool = False
    """Re-detect from the current fit even where keypoints2d_guided.h5 is current (another round)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, where mano.h5 holds MANO parameters."""
    allow_short_videos: bool = False
    """Where a camera's video is shorter than the others', keep the instants every camera shows."""


@dataclass
class Chunk(VideoChunk):
    hands: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), bool))  # (n, 2): the hands to re-detect


@dataclass
class SequenceSummary:
    name: str
    views: int  # (camera, frame) views of the sequence
    planned: dict[str, int]  # reason -> (view, hand)s planned for it
    crops: int  # (view, hand)s the landmark model ran on
    found: int  # ... where it found the hand (they replace the first detection)
    hidden: int  # joints of found hands left out: hidden by the other hand
    seconds: float
    chunks: int = 0
    chunks_reused: int = 0
    skipped: bool = False

    @property
    def crops_per_s(self) -> float:
        run = self.crops * (self.chunks - self.chunks_reused) / max(self.chunks, 1)
        return run / max(self.seconds, 1e-9)


# --- 1. the plan -----------------------------------------------------------------------------

def plan_views(rig: CameraRig, kp: Keypoints2D, joints: np.ndarray, opts: RedetectOptions) -> np.ndarray:
    """(C, F, 2) uint8 reason flags (0: not re-detected) for kp's cameras (``rig``, same order) and
    frames; ``joints`` (F, 2, 21, 3) the fitted joints of those frames, NaN where there is no fit."""
    C, F = kp.keypoints.shape[:2]
    need = np.zeros((C, F, 2), np.uint8)
    det = kp.keypoints.reshape(C, F, 2, N_HAND_JOINTS, 3)
    for c, cam in enumerate(rig.cameras):
        W, H = cam.size
        proj = cam.project(joints.reshape(-1, 3)).reshape(F, 2, N_HAND_JOINTS, 2)
        z = cam.to_camera(joints.reshape(-1, 3))[:, 2].reshape(F, 2, N_HAND_JOINTS)
        inside = in_image(proj, W, H)
        in_view = (z > 0).all(axis=-1) & (inside.mean(axis=-1) >= 0.5)  # (F, 2)
        size = np.linalg.norm(np.ptp(proj, axis=2), axis=-1)  # (F, 2) px
        found = (det[c, ..., 2] > 0).sum(axis=-1) >= MIN_FOUND  # (F, 2)
        d_own = _mean_px(det[c], proj)
        d_other = _mean_px(det[c], proj[:, ::-1])
        swapped = found & (d_other < d_own)
        disagrees = found & ~swapped & (d_own > opts.disagree * size)
        overlap = hand_boxes_overlap(proj, opts.overlap_margin * size[..., None])  # (F,)
        flags = MISSING * ~found | SWAPPED * swapped | DISAGREES * disagrees | OVERLAP * overlap[:, None]
        need[c] = np.where(in_view, flags, 0)
    return need


def _mean_px(det: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """(F, 2, 21, 3) detections vs (F, 2, 21, 2) projections -> (F, 2) mean px over found joints (inf if none)."""
    ok = det[..., 2] > 0
    d = np.linalg.norm(np.nan_to_num(det[..., :2]) - proj, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, d, 0).sum(axis=-1) / ok.sum(axis=-1)
    return np.where(ok.any(axis=-1) & np.isfinite(out), out, np.inf)


# --- 2. one chunk ----------------------------------------------------------------------------

def mask_other_hand(image: np.ndarray, view: HandsInView, hand: int, grow_px: float) -> np.ndarray:
    """The image with the other hand painted over where it is in front of ``hand`` (grown by
    ``grow_px``, never over ``hand``'s own front pixels), in the median colour of the window's
    pixels neither hand covers. The image itself when the other hand is in front nowhere."""
    other = view.front_of(1 - hand)
    if not other.any():
        return image
    r = max(int(round(grow_px)), 0)
    if r:
        other = cv2.dilate(other.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) > 0
    other &= ~view.front_of(hand)
    x0, y0 = view.origin
    h, w = other.shape
    window = image[y0:y0 + h, x0:x0 + w]
    free = view.owner < 0
    fill = np.median(window[free], axis=0) if free.any() else np.median(image.reshape(-1, 3), axis=0)
    out = image.copy()
    out[y0:y0 + h, x0:x0 + w][other] = fill.astype(np.uint8)
    return out


_LANDMARKS: tuple[int, object] | None = None  # this process's landmark model, kept between chunks


def _landmarks(complexity: int):
    global _LANDMARKS
    if _LANDMARKS is None or _LANDMARKS[0] != complexity:
        from capture.detect.landmarks import HandLandmarks

        if _LANDMARKS is not None:
            _LANDMARKS[1].close()
        _LANDMARKS = (complexity, HandLandmarks(complexity))
    return _LANDMARKS[1]


def redetect_chunk(root: Path, chunk: Chunk, cfg: RedetectConfig, fingerprint: str) -> Path:
    """Re-detect the planned hands of one chunk and save the results; returns the chunk file. Ray-ready."""
    from data_schemas.takes import open_take
    from hand_model.posing import hand_model_for, pose_hands
    from hand_model.visibility import hands_in_view

    session = Session.open(root)
    take = open_take(session, chunk.seq, cfg.allow_short_videos)
    camera = read_calibration(session.root / CALIBRATION_TOML)[chunk.camera]
    mano_path = session.path(MANO, seq=chunk.seq)
    fit = read_mano(mano_path)
    model = hand_model_for(fit.hand_model, cfg.mano_dir, source=mano_path)
    rows = np.searchsorted(fit.frames, chunk.instants)
    posed = pose_hands(model, fit.global_orient[rows], fit.hand_pose[rows], fit.betas, fit.transl[rows],
                       fit.flat_hand_mean)
    lm = _landmarks(cfg.model_complexity)
    points, presence, p_left, state, instant, hand, off_fit = [], [], [], [], [], [], []
    for k, (t, frame) in enumerate(take.read(chunk.camera, chunk.instants)):
        view = hands_in_view(camera, posed.vertices[k], model.faces, posed.joints[k], cfg.occlusion_tolerance)
        for h in np.flatnonzero(chunk.hands[k]):
            size = float(np.linalg.norm(np.ptp(view.pixels[h], axis=0)))
            image = mask_other_hand(frame, view, h, cfg.mask_grow * size) if cfg.mask else frame
            r = lm.on_crop(image, hand_roi(view.pixels[h], cfg.roi_scale, cfg.roi_shift))
            off_fit.append(np.linalg.norm(r.points[:, :2] - view.pixels[h], axis=1).mean() / max(size, 1.0))
            points.append(r.points)
            presence.append(r.presence)
            p_left.append(r.p_left)
            state.append(view.state[h])
            instant.append(t)
            hand.append(h)
    out = session.path(CHUNK_DIR, seq=chunk.seq) / f"{chunk.key}.npz"
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, points=np.array(points, np.float32).reshape(-1, N_HAND_JOINTS, 3),  # (K, 21, 3)
                     presence=np.array(presence, np.float32), p_left=np.array(p_left, np.float32),
                     state=np.array(state, np.int8).reshape(-1, N_HAND_JOINTS), instant=np.array(instant, np.int64),
                     hand=np.array(hand, np.int64), off_fit=np.array(off_fit, np.float32),
                     fingerprint=np.array(fingerprint))
    return out


def _run_chunk(job: tuple) -> tuple[str, Path]:
    root, chunk, cfg, fp = job
    return chunk.key, redetect_chunk(root, chunk, cfg, fp)


def chunk_fingerprint(sequence_fp: str, chunk: Chunk) -> str:
    """A chunk file's inputs: the sequence's (files and options) and the chunk's plan."""
    doc = f"{sequence_fp}\n{chunk.camera}\n{chunk.instants}\n{chunk.hands.astype(int).tolist()}"
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _chunk_done(path: Path, fp: str) -> bool:
    try:
        with np.load(path) as z:
            return str(z["fingerprint"]) == fp
    except Exception:  # missing or damaged: redone
        return False


# --- the stage -------------------------------------------------------------------------------

def own_fingerprint(session: Session, seq: str, cfg: RedetectOptions) -> str:
    """What the guided file depends on besides keypoints2d.h5 and the fit: the videos (name, size,
    mtime) and frame offsets, calibration.toml (size, mtime), the options, the mediapipe version."""
    import mediapipe

    h = hashlib.sha256(json.dumps(dataclasses.asdict(RedetectOptions(**{
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(RedetectOptions)})), sort_keys=True).encode())
    h.update(f"mediapipe-{mediapipe.__version__}\n{file_id(session.root / CALIBRATION_TOML)}\n".encode())
    offsets = {c.name: c.frame_offset for c in session.config.cameras}
    for cam in session.cameras:
        video = session.sequence_video(seq, cam)
        h.update(f"{cam}={file_id(video) if video else 'missing'}:{offsets[cam]}\n".encode())
    return h.hexdigest()[:16]


def _fit_id(mano_path: Path, fit: ManoFit) -> str:
    return fit.inputs or file_id(mano_path)


def is_current(path: Path, kp: Keypoints2D, own: str, fit_id: str, mano_path: Path) -> bool:
    """keypoints2d_guided.h5 is there, made from ``kp`` with ``own`` inputs, and from this fit or one
    before the fit that mano.h5 now holds (written after it: the fit on its evidence)."""
    if not path.is_file():
        return False
    try:
        old = read_keypoints2d(path)
    except SchemaError:
        return False
    if not made_from(old, kp):
        return False
    mine, _, from_fit = old.inputs[len(kp.inputs) + 1:].partition("@")
    return mine == own and (from_fit == fit_id or mano_path.stat().st_mtime_ns > path.stat().st_mtime_ns)


def redetect(root: str | Path, cfg: RedetectConfig | None = None, progress: bool | None = None,
             executor: Executor | None = None) -> list[SequenceSummary]:
    """Re-detect every sequence of the session (chunks on ``executor``, default local processes).
    The sequences' folders are locked while it runs."""
    cfg = cfg or RedetectConfig()
    session = Session.open(root)
    names = session.select_sequences(cfg.sequences, "redetect")
    if cfg.chunk_frames < 1 or cfg.model_complexity not in (0, 1) or not cfg.roi_scale > 0:
        raise SchemaError(root, "redetect needs --chunk-frames >= 1, --model-complexity 0 or 1, --roi-scale > 0")
    calibration = session.root / CALIBRATION_TOML
    if not calibration.is_file():
        raise SchemaError(calibration, "file not found; run `handdiffuse calibrate` first")
    executor = executor or cfg.local_executor(cfg.workers)
    with writing_all([session.path(SEQUENCE_DIR, seq=s) for s in names], "redetect"):
        return [_redetect_sequence(session, seq, cfg, progress, executor) for seq in names]


def _inputs(session: Session, seq: str) -> tuple[Keypoints2D, ManoFit, Path]:
    kp_path, mano_path = session.path(KEYPOINTS2D, seq=seq), session.path(MANO, seq=seq)
    if not kp_path.is_file():
        raise SchemaError(kp_path, "file not found; run `handdiffuse detect` first")
    if not mano_path.is_file():
        raise SchemaError(mano_path, "file not found; run `handdiffuse triangulate` and `handdiffuse fit` first")
    return read_keypoints2d(kp_path), read_mano(mano_path), mano_path


def _redetect_sequence(session: Session, seq: str, cfg: RedetectConfig, progress: bool | None,
                       executor: Executor) -> SequenceSummary:
    t0 = time.perf_counter()
    out = session.path(KEYPOINTS2D_GUIDED, seq=seq)
    kp, fit, mano_path = _inputs(session, seq)
    own, fit_id = own_fingerprint(session, seq, cfg), _fit_id(mano_path, fit)
    C, F = kp.keypoints.shape[:2]
    chunk_dir = session.path(CHUNK_DIR, seq=seq)
    if not cfg.again and is_current(out, kp, own, fit_id, mano_path):
        shutil.rmtree(chunk_dir, ignore_errors=True)
        return SequenceSummary(seq, C * F, {}, 0, 0, 0, time.perf_counter() - t0, skipped=True)
    # 1.
    rig = read_calibration(session.root / CALIBRATION_TOML).subset(kp.cameras, session.root / CALIBRATION_TOML)
    need = plan_views(rig, kp, _fitted_joints(fit, kp.frames), cfg)
    planned = {name: int(((need & bit) > 0).sum()) for name, bit in REASONS.items()}
    LOG.info("redetect %s: %d of %d (view, hand)s planned (%s)", seq, int((need > 0).sum()), 2 * C * F,
             ", ".join(f"{k} {v}" for k, v in planned.items()))
    # 2.
    fp = f"{own}@{fit_id}"
    chunks = _chunks(seq, kp, need > 0, cfg.chunk_frames)
    fps = {c.key: chunk_fingerprint(fp, c) for c in chunks}
    todo = [c for c in chunks if not _chunk_done(chunk_dir / f"{c.key}.npz", fps[c.key])]
    _run(session.root, todo, cfg, fps, f"redetect {seq}", progress, executor)
    # 3.
    guided, redetected, hidden = _assemble(kp, [chunk_dir / f"{c.key}.npz" for c in chunks], cfg)
    # 4.
    from capture.detect.landmarks import MODELS

    name = f"mediapipe-landmarks-{Path(MODELS[cfg.model_complexity]).stem}, guided by the fit"
    write_keypoints2d(out, Keypoints2D(kp.cameras, kp.image_sizes, kp.frames, guided, name, kp.fps,
                                       inputs=guided_inputs(kp, fp), redetected=redetected))
    shutil.rmtree(chunk_dir, ignore_errors=True)
    return SequenceSummary(seq, C * F, planned, int((need > 0).sum()), int(redetected.sum()), hidden,
                           time.perf_counter() - t0, len(chunks), len(chunks) - len(todo))


def _fitted_joints(fit: ManoFit, frames: np.ndarray) -> np.ndarray:
    """(F, 2, 21, 3) the fit's joints at ``frames`` (keypoints2d.h5's); NaN at frames the fit lacks."""
    out = np.full((len(frames), 2, N_HAND_JOINTS, 3), np.nan)
    common, i, j = np.intersect1d(frames, fit.frames, return_indices=True)
    out[i] = fit.joints[j].reshape(-1, 2, N_HAND_JOINTS, 3)
    return out


def _chunks(seq: str, kp: Keypoints2D, need: np.ndarray, chunk_frames: int) -> list[Chunk]:
    """need (C, F, 2) bool -> per camera, its planned instants cut into runs of ``chunk_frames``."""
    chunks = []
    for c, cam in enumerate(kp.cameras):
        rows = np.flatnonzero(need[c].any(axis=1))
        for i in range(0, len(rows), chunk_frames):
            r = rows[i:i + chunk_frames]
            chunks.append(Chunk(seq, cam, [int(kp.frames[k]) for k in r], need[c, r]))
    return chunks


def _assemble(kp: Keypoints2D, files: list[Path], opts: RedetectOptions) -> tuple[np.ndarray, np.ndarray, int]:
    """Step 3: chunk files -> (C, F, 42, 3) re-detected hands, (C, F, 2) redetected, hidden joints left out."""
    C, F = kp.keypoints.shape[:2]
    guided = np.full((C, F, 2, N_HAND_JOINTS, 3), np.nan, np.float32)
    guided[..., 2] = 0.0
    redetected = np.zeros((C, F, 2), bool)
    row = {int(f): i for i, f in enumerate(kp.frames)}
    hidden = 0
    for path in files:
        c = kp.cameras.index(path.stem.rsplit("-", 1)[0])
        with np.load(path) as z:
            for pts, presence, off, state, t, h in zip(z["points"], z["presence"], z["off_fit"], z["state"],
                                                       z["instant"], z["hand"]):
                if presence < opts.min_presence or not off < opts.max_off_fit:
                    continue
                W, H = kp.image_sizes[c]
                keep = in_image(pts, W, H) & (state != HIDDEN_BY_OTHER) & (state != OUTSIDE)
                block = guided[c, row[int(t)], h]
                block[keep] = np.concatenate([pts[keep, :2], np.ones((int(keep.sum()), 1))], axis=1)
                redetected[c, row[int(t)], h] = True
                hidden += int((state == HIDDEN_BY_OTHER).sum())
    return guided.reshape(C, F, 2 * N_HAND_JOINTS, 3), redetected, hidden


def _run(root: Path, todo: list[Chunk], cfg: RedetectConfig, fps: dict[str, str], desc: str,
         progress: bool | None, executor: Executor) -> None:
    """Re-detect ``todo`` chunks on the executor, with a progress bar on a TTY."""
    if not todo:
        return
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=sum(int(c.hands.sum()) for c in todo), desc=desc, unit="crop")
    crops = {c.key: int(c.hands.sum()) for c in todo}
    try:
        for key, _ in executor.map_unordered(_run_chunk, [(root, c, cfg, fps[c.key]) for c in todo],
                                             TaskResources(cpus=1)):
            LOG.debug("re-detected chunk %s of %s: %d crops", key, todo[0].seq, crops[key])
            if bar is not None:
                bar.update(crops[key])
    finally:
        if bar:
            bar.close()
