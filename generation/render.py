"""Pictures of generated two-hand motion, drawn with the bundled open hand model.

    render_filmstrip(joints, global_orient, hand_pose, run / "samples" / "filmstrip.png", title="epoch 10")
    render_video(joints[0], global_orient[0], hand_pose[0], run / "samples" / "sample0.mp4", fps=30.0)

Each picture shows both hands' meshes, posed from the generated rotations with the translation of
``generation.output.motion_parameters`` (wrists on the generated wrists), and the generated
skeleton over them; left blue, right orange (``hand_model.draw``). The view is a fixed
3/4 view of the sequence frame (z up), centred on the motion. Files are written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_schemas.atomic import atomic_path
from hand_model.draw import Viewpoint, draw_mesh, draw_skeleton
from hand_model.posing import hand_model_for, pose_hands
from generation.output import motion_parameters

MAX_ROWS = 4  # samples in one filmstrip
AZIMUTH, ELEVATION = -60.0, 25.0  # degrees: the 3/4 view
VIDEO_SIZE = (480, 360)  # px, width x height
VIDEO_FOURCC = "mp4v"


def _pose(joints: np.ndarray, global_orient: np.ndarray, hand_pose: np.ndarray) -> tuple[np.ndarray, tuple]:
    """(F, 42, 3), (F, 2, 3), (F, 2, 45) -> vertices (F, 2, V, 3) m of the open hand model, and its faces."""
    model = hand_model_for("open_hand")
    betas, transl = motion_parameters(joints, global_orient, hand_pose, model)
    posed = pose_hands(model, global_orient, hand_pose, betas, transl, flat_hand_mean=True)
    return posed.vertices, model.faces


def _view(points: np.ndarray) -> Viewpoint:
    """The 3/4 view centred on (..., 3) points, far enough away to see them all."""
    p = points.reshape(-1, 3)  # (..., 3) -> (P, 3)
    p = p[np.isfinite(p).all(-1)]
    center = (p.min(0) + p.max(0)) / 2 if len(p) else np.zeros(3)
    extent = float((p.max(0) - p.min(0)).max()) if len(p) else 0.2
    return Viewpoint.oblique(center, max(0.6, 3.0 * extent), AZIMUTH, ELEVATION)


def _draw(a, vertices: np.ndarray, joints: np.ndarray, faces: tuple, view: Viewpoint) -> np.ndarray:
    """Mesh (2, V, 3), then the skeleton (42, 3) over it; returns the (P, 2) drawn points."""
    a.set_xticks([])
    a.set_yticks([])
    draw_mesh(a, vertices, faces, view)
    draw_skeleton(a, joints, view)
    xy = np.concatenate([view.project(vertices.reshape(-1, 3))[0], view.project(joints)[0]])  # (2V + 42, 2)
    return xy[np.isfinite(xy).all(-1)]


def _limits(xy: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """(P, 2) points -> x limits and y limits (y pointing down, as in an image), padded."""
    lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.full(2, -1.0), np.full(2, 1.0))
    pad = 0.08 * float((hi - lo).max() or 1.0)
    return (lo[0] - pad, hi[0] + pad), (hi[1] + pad, lo[1] - pad)


def render_filmstrip(joints: np.ndarray, global_orient: np.ndarray, hand_pose: np.ndarray, out_png: Path,
                     frames: int = 6, title: str = "") -> Path:
    """(N, F, 42, 3), (N, F, 2, 3), (N, F, 2, 45) -> a PNG: one row per sample (the first ``MAX_ROWS``),
    ``frames`` evenly spaced frames per row, one set of axis limits per row."""
    from matplotlib.figure import Figure

    # 1. which samples and frames
    joints = np.asarray(joints, np.float64)
    N, F = min(len(joints), MAX_ROWS), joints.shape[1]
    picks = np.unique(np.linspace(0, F - 1, min(frames, F)).round().astype(int))  # (K,)
    fig = Figure(figsize=(1.8 * len(picks), 1.9 * N + (0.3 if title else 0.0)), layout="constrained")
    ax = fig.subplots(N, len(picks), squeeze=False)
    for i in range(N):
        # 2. pose the picked frames, and one view for the row
        verts, faces = _pose(joints[i, picks], np.asarray(global_orient)[i, picks], np.asarray(hand_pose)[i, picks])
        view = _view(np.concatenate([verts.reshape(-1, 3), joints[i, picks].reshape(-1, 3)]))
        # 3. draw every cell, then share the row's limits
        xy = [_draw(ax[i][k], verts[k], joints[i, f], faces, view) for k, f in enumerate(picks)]
        xlim, ylim = _limits(np.concatenate(xy))
        for k, f in enumerate(picks):
            ax[i][k].set_xlim(*xlim)
            ax[i][k].set_ylim(*ylim)
            ax[i][k].set_aspect("equal", adjustable="box")
            ax[i][k].set_title(f"frame {int(f)}", fontsize=7)
        ax[i][0].set_ylabel(f"sample {i}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    # 4. write
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    return out_png


def render_video(joints: np.ndarray, global_orient: np.ndarray, hand_pose: np.ndarray, out_path: Path,
                 fps: float) -> Path:
    """(F, 42, 3), (F, 2, 3), (F, 2, 45) -> an MP4 (``VIDEO_SIZE``, "mp4v") of one sample, one view and
    one set of axis limits for the whole clip."""
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # 1. pose every frame; one view and limits for the clip
    joints = np.asarray(joints, np.float64)
    verts, faces = _pose(joints, np.asarray(global_orient), np.asarray(hand_pose))  # (F, 2, V, 3)
    every = np.concatenate([verts.reshape(-1, 3), joints.reshape(-1, 3)])  # (F * (2V + 42), 3)
    view = _view(every)
    xy = view.project(every)[0]
    xlim, ylim = _limits(xy[np.isfinite(xy).all(-1)])
    # 2. one figure, redrawn per frame
    w, h = VIDEO_SIZE
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    a = fig.add_axes((0, 0, 1, 1))
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        video = tmp.with_name(tmp.name + out_path.suffix)  # OpenCV picks the container from the extension
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*VIDEO_FOURCC), float(fps), (w, h))
        try:
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {VIDEO_FOURCC} video to {video}")
            for f in range(len(joints)):
                a.cla()
                _draw(a, verts[f], joints[f], faces, view)
                a.set_xlim(*xlim)
                a.set_ylim(*ylim)
                a.set_aspect("equal", adjustable="box")
                a.text(0.02, 0.97, f"frame {f}", transform=a.transAxes, fontsize=8, va="top")
                canvas.draw()
                rgba = np.asarray(canvas.buffer_rgba())  # (h, w, 4)
                writer.write(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR))
            # 3. the finished clip becomes the temp file that atomic_path renames
            writer.release()
            os.replace(video, tmp)
        finally:
            writer.release()
            video.unlink(missing_ok=True)
    return out_path
