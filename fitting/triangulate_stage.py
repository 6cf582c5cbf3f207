"""``handdiffuse triangulate SESSION``: every sequence's keypoints2d.h5 -> ``sequences/<seq>/joints3d.h5``.

1. read ``sequences/<seq>/keypoints2d.h5`` and ``calibration/calibration.toml``; the cameras
   of the keypoints, in their order, must all be calibrated, at the same image size; the
   points a person placed (``keypoints2d_manual.h5``, from ``handdiffuse merge``) replace the
   detections there, weighted above them; where a guided re-detection made from this
   keypoints2d.h5 is there (``keypoints2d_guided.h5``, from ``handdiffuse redetect``), the hands it
   re-detected replace the first detection's first (joints hidden by the other hand leave the
   evidence; a person's points still win); points further outside their image than half its
   size (``data_schemas.keypoints2d.OUTSIDE_MARGIN``: a unit or scale mistake) are left out,
   and counted in the summary
2. triangulate every frame (``fitting.triangulate``: robust per point, left/right swaps fixed)
3. the 2D evidence, resolved once for every later reader (fit, queue, annotation): the
   detections with the hands of the exchanged views put back on their sides, a person's
   points over them (on their true sides already), far-outside points left out
4. write joints3d.h5 atomically: joints, reprojection error, inlier cameras, the method,
   the cameras, which views had their hands exchanged, the evidence, the inputs' fingerprint

A sequence whose joints3d.h5 has the same fingerprint (keypoints2d.h5, calibration.toml,
keypoints2d_guided.h5 and keypoints2d_manual.h5: size and mtime; the options) is skipped.

``--frames`` (after ``handdiffuse merge`` put new manual points on them): when joints3d.h5 is
current apart from the manual points (same keypoints2d.h5, calibration and options), only those
frames, and any other whose manual points differ from the ones its evidence holds, are
triangulated again, with the sides found before (in a view a person annotated, the sides are
the person's) and no new left/right search; spliced in, the file is current again and records
the frames (``spliced``) for the fit. Otherwise the whole sequence, as without the option.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from data_schemas.calibration import CameraRig, read_calibration
from data_schemas.errors import SchemaError
from data_schemas.file_id import file_id
from data_schemas.h5io import read_if_current
from data_schemas.joints3d import Joints3D, read_joints3d, write_joints3d
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.keypoints2d import OUTSIDE_MARGIN, Keypoints2D, far_outside, made_from, overlay_guided, \
    overlay_manual, read_keypoints2d
from data_schemas.lock import writing
from data_schemas.session import CALIBRATION_TOML, JOINTS3D, KEYPOINTS2D, KEYPOINTS2D_GUIDED, KEYPOINTS2D_MANUAL, \
    SEQUENCE_DIR, Session
from fitting.triangulate import INLIER_PX, triangulate

LOG = logging.getLogger("handdiffuse")


@dataclass
class TriangulateOptions:
    """How the points are triangulated (what joints3d.h5's fingerprint holds besides its input files)."""

    method: Literal["robust", "dlt", "irls", "ransac"] = "robust"
    """robust (= irls): per point, views that disagree are left out; irls: iteratively reweighted
    least squares from the median of camera-pair triangulations; ransac: the best camera pair's
    point refitted on the views that agree with it; dlt: least squares over every view."""
    inlier_px: float = INLIER_PX
    """A view supports a point when its reprojection error is under this many pixels."""
    min_score: float = 0.0
    """Detections with a score at or below this are not used."""
    fix_swaps: bool = True
    """Exchange the two hands in views where the detector put each hand in the other's slot."""


@dataclass
class TriangulateConfig(TriangulateOptions):
    """Triangulate 3D joints from the 2D keypoints of every camera -> sequences/<seq>/joints3d.h5."""

    sequences: list[str] = field(default_factory=list)
    """Sequences to triangulate (default: all)."""
    frames: list[int] = field(default_factory=list)
    """Only these frames (and any other whose manual points changed), spliced into joints3d.h5,
    when the rest of it is current (default: every frame)."""


@dataclass
class SequenceSummary:
    name: str
    frames: int
    triangulated: float  # fraction of (frame, joint) with a 3D point
    reproj_px: float  # mean reprojection error of the triangulated joints, px
    swapped_views: int  # (camera, frame) views whose hands were exchanged
    seconds: float
    skipped: bool = False
    outside: int = 0  # found keypoints far outside their image, left out (not counted when skipped)
    spliced: list[int] | None = None  # --frames: the frames triangulated again (None: the whole sequence)
    guided: int = 0  # (view, hand)s whose first detection a guided re-detection replaced (not counted when skipped)

    @staticmethod
    def of(name: str, j: Joints3D, seconds: float, skipped: bool = False, outside: int = 0,
           spliced: list[int] | None = None, guided: int = 0) -> "SequenceSummary":
        valid = j.valid
        err = float(j.reproj_error[valid].mean()) if valid.any() else float("nan")
        swapped = int(j.swapped.sum()) if j.swapped is not None else 0
        return SequenceSummary(name, len(j.frames), float(valid.mean()) if valid.size else 0.0, err, swapped,
                               seconds, skipped, outside, spliced, guided)


def fingerprint(keypoints: Path, calibration: Path, cfg: TriangulateOptions, manual: Path | None = None,
                guided: Path | None = None) -> str:
    """What joints3d.h5 depends on, as ``<base>+<manual>``: base = keypoints2d.h5, calibration.toml and
    keypoints2d_guided.h5 where there is one (size, mtime) and the options; manual =
    keypoints2d_manual.h5 (size, mtime), ``-`` without one.
    A frame-subset run needs only the base to match: the manual points change frame by frame, and
    the stored evidence says which."""
    h = hashlib.sha256()
    for p in (keypoints, calibration, *([guided] if guided is not None and guided.is_file() else [])):
        h.update(f"{file_id(p)}\n".encode())
    opts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TriangulateOptions)}
    opts["outside_margin"] = OUTSIDE_MARGIN  # points further out are left out
    h.update(json.dumps(opts, sort_keys=True).encode())
    if manual is None or not manual.is_file():
        return f"{h.hexdigest()[:16]}+-"
    m = hashlib.sha256(file_id(manual).encode()).hexdigest()[:8]
    return f"{h.hexdigest()[:16]}+{m}"


def _base(inputs: str) -> str:
    return inputs.split("+", 1)[0]


def triangulate_session(root: str | Path, cfg: TriangulateConfig | None = None) -> list[SequenceSummary]:
    cfg = cfg or TriangulateConfig()
    if not (np.isfinite(cfg.inlier_px) and cfg.inlier_px > 0):
        raise SchemaError(root, f"triangulate needs --inlier-px > 0, got {cfg.inlier_px}")
    session = Session.open(root)
    names = session.select_sequences(cfg.sequences, "triangulate")
    calibration = session.root / CALIBRATION_TOML
    if not calibration.is_file():
        raise SchemaError(calibration, "file not found; run `handdiffuse calibrate` first")
    summaries = []
    for seq in names:
        with writing(session.path(SEQUENCE_DIR, seq=seq), "triangulate"):
            summary = _triangulate_sequence(session, seq, calibration, cfg)
        if not summary.skipped:
            what = f"frames {summary.spliced} spliced into" if summary.spliced is not None else "triangulated"
            LOG.info("%s %s: %d frames, %.1f%% of joints, %.2f px, %d swapped views, %d keypoints far "
                     "outside the image left out, %d hands re-detected, %.1f s", what, seq, summary.frames,
                     100 * summary.triangulated, summary.reproj_px, summary.swapped_views, summary.outside,
                     summary.guided, summary.seconds)
        summaries.append(summary)
    return summaries


def evidence(kp: Keypoints2D, swapped: np.ndarray, manual: Keypoints2D | None) -> np.ndarray:
    """Step 3: (C, F, 42, 3) keypoints2d's detections with the hands of the ``swapped`` (F, C) views
    exchanged back, a person's points over them (``overlay_manual``), far-outside points left out."""
    k = kp.keypoints.copy()
    c, f = np.nonzero(swapped.T)  # views whose two 21-point blocks the detector exchanged
    k[c, f] = np.concatenate([k[c, f, N_HAND_JOINTS:], k[c, f, :N_HAND_JOINTS]], axis=1)
    k = overlay_manual(k, kp.cameras, kp.frames, manual)
    k[far_outside(k, kp.image_sizes)] = [np.nan, np.nan, 0.0]
    return k


def _triangulate_sequence(session: Session, seq: str, calibration: Path, cfg: TriangulateConfig) -> SequenceSummary:
    """One sequence (steps 1-4), skipped when its joints3d.h5 has the inputs' fingerprint."""
    t0 = time.perf_counter()
    kp_path, out = session.path(KEYPOINTS2D, seq=seq), session.path(JOINTS3D, seq=seq)
    if not kp_path.is_file():
        raise SchemaError(kp_path, "file not found; run `handdiffuse detect` first")
    manual_path, guided_path = session.path(KEYPOINTS2D_MANUAL, seq=seq), session.path(KEYPOINTS2D_GUIDED, seq=seq)
    fp = fingerprint(kp_path, calibration, cfg, manual_path, guided_path)
    if (old := read_if_current(out, read_joints3d, fp)) is not None:
        return SequenceSummary.of(seq, old, time.perf_counter() - t0, skipped=True)
    # 1.
    kp = read_keypoints2d(kp_path)
    guided = _guided(guided_path, kp, seq)
    n_guided = int(guided.redetected.sum()) if guided is not None else 0
    kp = dataclasses.replace(kp, keypoints=overlay_guided(kp.keypoints, guided))  # the first detection, re-detected
    rig = _rig(read_calibration(calibration), kp, seq, calibration)
    # a person's points (handdiffuse merge) over the detections, weighted above them
    manual = read_keypoints2d(manual_path) if manual_path.is_file() else None
    keypoints = overlay_manual(kp.keypoints, kp.cameras, kp.frames, manual)
    score = keypoints[..., 2]
    if not (score > 0).any():
        raise SchemaError(kp_path, "no hand keypoints detected in any camera")
    if not (score > cfg.min_score).any():
        raise SchemaError(kp_path, f"no hand keypoints with a score above min_score={cfg.min_score} in any camera")
    far = far_outside(keypoints, kp.image_sizes)  # (C, F, 42)
    keypoints[far] = [np.nan, np.nan, 0.0]
    if not (keypoints[..., 2] > cfg.min_score).any():
        kp.check_inside(kp_path)  # every usable point was far outside: say how many, and the first
    if cfg.frames and (old := _spliceable(out, fp, kp)) is not None:
        j = _splice(old, rig, kp, manual, cfg, seq, out)
        j.inputs = fp
        write_joints3d(out, j)
        return SequenceSummary.of(seq, j, time.perf_counter() - t0, outside=int(far.sum()),
                                  spliced=[int(f) for f in j.spliced], guided=n_guided)
    # 2.
    result = triangulate(rig, keypoints, cfg.method, cfg.inlier_px, cfg.min_score, cfg.fix_swaps)
    # 3. + 4.
    j = Joints3D(kp.frames, result.joints, result.reproj_error, result.n_cameras, kp.fps, result.method,
                 inputs=fp, cameras=kp.cameras, swapped=result.swapped,
                 keypoints=evidence(kp, result.swapped, manual))
    write_joints3d(out, j)
    return SequenceSummary.of(seq, j, time.perf_counter() - t0, outside=int(far.sum()), guided=n_guided)


def _guided(path: Path, kp: Keypoints2D, seq: str) -> Keypoints2D | None:
    """keypoints2d_guided.h5 when there is one made from this keypoints2d.h5; one from an earlier
    detection is left aside, with a log line (``handdiffuse redetect`` makes it again after the fit)."""
    if not path.is_file():
        return None
    guided = read_keypoints2d(path)
    if made_from(guided, kp):
        return guided
    LOG.warning("triangulate %s: %s was made from another keypoints2d.h5 (detect ran since): not used; "
                "run `handdiffuse redetect` after the fit", seq, path.name)
    return None


def _rig(rig: CameraRig, kp: Keypoints2D, seq: str, calibration: Path) -> CameraRig:
    """The calibration's cameras of ``kp``, in its order; each calibrated at its image size."""
    for name, size in zip(kp.cameras, kp.image_sizes):
        if name not in rig.names:
            raise SchemaError(calibration, f"camera '{name}' (in {seq}/keypoints2d.h5) is missing from the "
                              "calibration")
        if tuple(rig[name].size) != tuple(int(v) for v in size):
            raise SchemaError(calibration, f"camera '{name}' is calibrated at {rig[name].size[0]}x"
                              f"{rig[name].size[1]} px but {seq}/keypoints2d.h5 has {size[0]}x{size[1]} px images")
    return rig.subset(kp.cameras, calibration)


def _spliceable(out: Path, fp: str, kp: Keypoints2D) -> Joints3D | None:
    """The current joints3d.h5 when frames can be spliced into it: made from the same keypoints2d.h5,
    calibration and options (the fingerprint's base), with its evidence, cameras and frames."""
    if not out.is_file():
        return None
    try:
        old = read_joints3d(out)
    except SchemaError:
        return None
    if _base(old.inputs) != _base(fp) or old.keypoints is None or old.swapped is None:
        return None
    return old if old.cameras == kp.cameras and np.array_equal(old.frames, kp.frames) else None


def _splice(old: Joints3D, rig: CameraRig, kp: Keypoints2D, manual: Keypoints2D | None, cfg: TriangulateConfig,
            seq: str, out: Path) -> Joints3D:
    """``cfg.frames`` and the frames whose evidence changed, triangulated again with ``old``'s sides."""
    row = {int(f): i for i, f in enumerate(kp.frames)}
    missing = [f for f in cfg.frames if f not in row]
    if missing:
        raise SchemaError(out, f"--frames: frame {missing[0]} is not a frame of {seq}")
    k = evidence(kp, old.swapped, manual)  # (C, F, 42, 3)
    same = (k == old.keypoints) | (np.isnan(k) & np.isnan(old.keypoints))
    changed = ~same.all(axis=(0, 2, 3))  # (F,) frames whose evidence (the manual points) changed
    changed[[row[f] for f in cfg.frames]] = True
    A = np.flatnonzero(changed)
    tri = triangulate(rig, k[:, A], cfg.method, cfg.inlier_px, cfg.min_score, fix_swaps=False)
    j = Joints3D(old.frames, old.joints.copy(), old.reproj_error.copy(), old.n_cameras.copy(), old.fps, tri.method,
                 cameras=old.cameras, swapped=old.swapped, keypoints=k, spliced=old.frames[A],
                 spliced_from=old.inputs)
    j.joints[A], j.reproj_error[A], j.n_cameras[A] = tri.joints, tri.reproj_error, tri.n_cameras
    return j
