"""Calibration report: PNG figures beside calibration.toml.

    calibration_errors.png    mean reprojection error and board views per camera
    calibration_rig.png       the cameras (centres and viewing directions) and the board's path
    calibration_coverage.png  where each camera saw board corners in its image
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capture.calibration.board_views import CameraViews
from capture.calibration.bundle_adjust import AdjustedRig
from data_schemas.atomic import atomic_path
from data_schemas.calibration import CameraRig

FILES = ("calibration_errors.png", "calibration_rig.png", "calibration_coverage.png")


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def write_report(folder: Path, rig: CameraRig, views: list[CameraViews], adjusted: AdjustedRig) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = rig.names
    errors = [rig.metadata["reprojection_error_px"][n] for n in names]
    counts = [rig.metadata["board_views"][n] for n in names]
    # errors per camera
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), errors, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("mean reprojection error (px)")
    ax2 = ax.twinx()
    ax2.plot(range(len(names)), counts, "o-", color="tab:orange", ms=3)
    ax2.set_ylabel("board views", color="tab:orange")
    ax.set_title(f"calibration: mean error {rig.metadata['error']:.3f} px over {len(names)} cameras")
    fig.tight_layout()
    _save(fig, folder / FILES[0])
    plt.close(fig)
    # the rig in 3D
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    centres = np.stack([c.center for c in rig.cameras])
    axes = np.stack([c.R[2] for c in rig.cameras])  # optical axes in the world
    ax.scatter(*centres.T, c="tab:blue", s=12)
    span = np.ptp(centres, axis=0).max()
    for c, a, n in zip(centres, axes, names):
        ax.plot(*np.stack([c, c + 0.15 * span * a]).T, color="tab:blue", lw=0.8)
        ax.text(*c, n, fontsize=6)
    board = np.stack([p.t for p in adjusted.boards.values()])
    ax.plot(*board.T, ".", color="tab:orange", ms=2, label="board origin per view")
    ax.set_title("cameras and the board's path (world frame)")
    ax.legend(fontsize=7)
    _save(fig, folder / FILES[1])
    plt.close(fig)
    # coverage
    n = len(views)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axs = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.0 * rows), squeeze=False)
    for ax, v in zip(axs.ravel(), views):
        pts = np.concatenate(v.corners) if v.corners else np.zeros((0, 2))
        ax.plot(pts[:, 0], pts[:, 1], ",", color="tab:green", alpha=0.5)
        ax.set_xlim(0, v.size[0])
        ax.set_ylim(v.size[1], 0)
        ax.set_aspect("equal")
        ax.set_title(f"{v.camera}: {len(v)} views", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axs.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("board corners seen per camera")
    fig.tight_layout()
    _save(fig, folder / FILES[2])
    plt.close(fig)
    return [folder / f for f in FILES]
