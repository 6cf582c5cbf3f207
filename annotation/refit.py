"""Re-triangulate and re-fit the frames of one sequence that got manual 2D points, and splice them in.

Manual points (keypoints2d_manual.h5) replace the detections at the same (camera, frame,
point) and weigh ``manual_weight`` where a detection weighs its score (<= 1): the
triangulation's least squares weigh a view by score^2, the fit's 2D term by score.

1. inputs: keypoints2d.h5 with the hands the triangulation found exchanged put back
   (``fitting.fit_stage.load_inputs``), the manual points over them; joints3d.h5, mano.h5
2. triangulate the affected frames (``fitting.triangulate``, joints3d.h5's method) without a
   new left/right search: in an annotated view the sides are the person's, and the exchanges
   found before are undone already
3. fit windows of ``context_frames`` either side of the affected frames (the temporal terms
   need neighbours), shape kept (mano.h5's betas); only the affected frames are spliced in
4. the fit's quality (``fitting.quality.measure``) over the whole sequence, as the fit stage
   measures it (thresholds relative to the sequence), with the manual points; the affected
   frames' rows spliced in
5. write joints3d.h5 and mano.h5; each one's fingerprint is renewed (now with the manual
   points' file among the inputs) when it was current before the merge (``stages_current``:
   joints3d.h5 for the default triangulation options, mano.h5 for these fit options), so
   ``handdiffuse triangulate`` / ``fit`` with those options keep the splice; left as it was
   otherwise (the stage then redoes the whole sequence, with the manual points)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_schemas.errors import SchemaError
from data_schemas.joints3d import read_joints3d, write_joints3d
from data_schemas.keypoints2d import MANUAL_WEIGHT, overlay_manual, read_keypoints2d
from data_schemas.mano import read_mano, write_mano
from data_schemas.session import CALIBRATION_TOML, JOINTS3D, KEYPOINTS2D, KEYPOINTS2D_MANUAL, MANO, Session
from fitting.fit import FitOptions
from fitting.quality import QualityRule


@dataclass
class RefitConfig:
    """Refit of the frames that got manual points."""

    context_frames: int = 3
    """Frames either side of an annotated frame fitted with it (temporal terms); only the annotated
    frames are replaced."""
    manual_weight: float = MANUAL_WEIGHT
    """Weight of a manual point where a detection weighs its score (<= 1)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, for fits made with --hand-model mano."""
    options: FitOptions = field(default_factory=FitOptions)
    rule: QualityRule = field(default_factory=QualityRule)


@dataclass
class RefitSummary:
    sequence: str
    frames: list[int]  # the annotated frames refitted
    window_frames: int  # frames fitted, context included
    manual_px_before: float  # mean distance of the manual points to the fit's projection, px
    manual_px_after: float
    failed_before: int  # of the refitted frames, how many had a hand flagged
    failed_after: int


def windows(rows: np.ndarray, n_frames: int, context: int) -> list[np.ndarray]:
    """Consecutive runs of frame rows covering each of ``rows`` +- ``context``, inside [0, n_frames)."""
    near = np.zeros(n_frames, bool)
    for r in rows:
        near[max(0, r - context):min(n_frames, r + context + 1)] = True
    idx = np.flatnonzero(near)
    return np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1) if len(idx) else []


def _manual_distance(fit_joints: np.ndarray, manual: np.ndarray, rig) -> float:
    """Mean px distance of manual points (C, K, 42, 3) to the projections of ``fit_joints`` (K, 42, 3)."""
    d = []
    for c, cam in enumerate(rig.cameras):
        placed = manual[c, ..., 2] > 0  # (K, 42)
        if placed.any():
            d.append(np.linalg.norm(cam.project(fit_joints)[placed] - manual[c, ..., :2][placed], axis=-1))
    return float(np.concatenate(d).mean()) if d else float("nan")


def _fit_config(cfg: RefitConfig, fit) -> "FitConfig":
    from fitting.fit_stage import FitConfig

    kind = "mano" if fit.hand_model == "mano" else "open_hand"
    return FitConfig(hand_model=kind, mano_dir=cfg.mano_dir, options=cfg.options, rule=cfg.rule)


def stages_current(root: str | Path, seq: str, cfg: RefitConfig | None = None) -> tuple[bool, bool]:
    """Whether joints3d.h5 (for the default triangulation options) and mano.h5 (for ``cfg``'s fit
    options) are up to date with their inputs; asked before the manual points change, so that
    after the splice they can be declared current again (``refit_frames(current=...)``)."""
    from fitting.fit_stage import fingerprint as fit_fingerprint
    from fitting.triangulate_stage import TriangulateConfig, fingerprint as tri_fingerprint

    cfg = cfg or RefitConfig()
    session = Session.open(root)
    paths = [session.path(p, seq=seq) for p in (KEYPOINTS2D, JOINTS3D, MANO, KEYPOINTS2D_MANUAL)]
    if not all(p.is_file() for p in paths[:3]):
        return False, False
    tri = read_joints3d(paths[1]).inputs == tri_fingerprint(paths[0], session.root / CALIBRATION_TOML,
                                                            TriangulateConfig(), paths[3])
    fit = read_mano(paths[2])
    return tri, bool(fit.inputs) and fit.inputs == fit_fingerprint(session, seq, _fit_config(cfg, fit))


def refit_frames(root: str | Path, seq: str, frames: list[int], cfg: RefitConfig | None = None,
                 current: tuple[bool, bool] = (False, False)) -> RefitSummary:
    import torch

    from fitting.fit import FitInputs, fit_sequence
    from fitting.fit_stage import fingerprint, load_inputs
    from hand_model.model import HandModel, HandModelConfig
    from fitting.triangulate_stage import TriangulateConfig, fingerprint as tri_fingerprint
    from fitting.quality import measure
    from fitting.triangulate import INLIER_PX, METHODS, triangulate

    cfg = cfg or RefitConfig()
    session = Session.open(root)
    mano_path = session.path(MANO, seq=seq)
    if not mano_path.is_file():
        raise SchemaError(mano_path, "file not found: run `handdiffuse fit` first")
    # 1.
    j3d, kp, keypoints, rig, swapped = load_inputs(session, seq)
    fit = read_mano(mano_path)
    if not np.array_equal(fit.frames, kp.frames):
        raise SchemaError(mano_path, "frames differ from keypoints2d.h5's: run `handdiffuse fit` again")
    manual_path = session.path(KEYPOINTS2D_MANUAL, seq=seq)
    manual = read_keypoints2d(manual_path)
    combined = overlay_manual(keypoints, kp.cameras, kp.frames, manual, cfg.manual_weight)  # (C, F, 42, 3)
    row = {int(f): i for i, f in enumerate(kp.frames)}
    missing = [f for f in frames if f not in row]
    if missing:
        raise SchemaError(manual_path, f"frame {missing[0]} is not a frame of {seq}/keypoints2d.h5")
    A = np.array(sorted(row[f] for f in set(frames)))
    fit_cfg = _fit_config(cfg, fit)
    model = HandModel(HandModelConfig(kind=fit_cfg.hand_model, mano_dir=cfg.mano_dir))

    def joints_of(go, hp, tr) -> np.ndarray:  # (K, 2, 3), (K, 2, 45), (K, 2, 3) -> (K, 42, 3)
        with torch.no_grad():
            out = model(*(torch.as_tensor(a) for a in (go, hp, fit.betas, tr))).joints
        return out.numpy().reshape(len(go), -1, 3)

    manual_at_A = overlay_manual(np.zeros_like(keypoints[:, A]), kp.cameras, kp.frames[A], manual, 1.0)  # (C, K, 42, 3)
    before = _manual_distance(joints_of(fit.global_orient[A], fit.hand_pose[A], fit.transl[A]), manual_at_A, rig)
    failed_before = int((fit.quality.failure[A] != 0).any(1).sum())
    # 2.
    method = j3d.method if j3d.method in METHODS else "robust"
    tri = triangulate(rig, combined[:, A], method, INLIER_PX, 0.0, fix_swaps=False)
    j3d.joints[A], j3d.reproj_error[A], j3d.n_cameras[A] = tri.joints, tri.reproj_error, tri.n_cameras
    # 3.
    fitted = 0
    for run in windows(A, len(kp.frames), cfg.context_frames):
        res = fit_sequence(model, FitInputs(j3d.joints[run], combined[:, run], rig), cfg.options, betas=fit.betas)
        keep = np.isin(run, A)
        for name in ("global_orient", "hand_pose", "transl"):
            getattr(fit, name)[run[keep]] = getattr(res, name)[keep]
        fitted += len(run)
    # 4.
    joints = joints_of(fit.global_orient, fit.hand_pose, fit.transl)  # (F, 42, 3)

    def vertices_of(idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = [torch.as_tensor(a[idx]) for a in (fit.global_orient, fit.hand_pose, fit.transl)]
            return model(t[0], t[1], torch.as_tensor(fit.betas), t[2]).vertices.numpy()

    m = measure(joints.reshape(-1, 2, 21, 3), j3d.joints, combined, rig, cfg.rule, vertices_of, model.faces, swapped)
    for name in ("reproj_mean_px", "reproj_max_px", "residual3d", "penetration", "bone_deviation", "n_cameras",
                 "failure"):
        getattr(fit.quality, name)[A] = getattr(m.quality, name)[A]
    after = _manual_distance(joints[A], manual_at_A, rig)
    # 5.
    if current[0]:  # the splice stands for a triangulation with the manual points
        j3d.inputs = tri_fingerprint(session.path(KEYPOINTS2D, seq=seq), session.root / CALIBRATION_TOML,
                                     TriangulateConfig(), manual_path)
    write_joints3d(session.path(JOINTS3D, seq=seq), j3d)
    if current[1]:
        fit.inputs = fingerprint(session, seq, fit_cfg)
    write_mano(mano_path, fit)
    return RefitSummary(seq, [int(kp.frames[a]) for a in A], fitted, before, after, failed_before,
                        int((fit.quality.failure[A] != 0).any(1).sum()))
