"""Draw hand meshes with matplotlib (Lambert + ambient shading), for docs and reports."""

from __future__ import annotations

import numpy as np


def shade(vertices: np.ndarray, faces: np.ndarray, color: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(F, 4) RGBA per face: ambient + Lambert for a light direction in view space."""
    tri = vertices[faces]  # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    lam = np.clip(n @ (light / np.linalg.norm(light)), 0, 1)
    rgb = np.clip(color[None] * (0.35 + 0.65 * lam[:, None]), 0, 1)
    return np.concatenate([rgb, np.ones((len(faces), 1))], axis=1)


def draw_meshes(ax, meshes: list[tuple[np.ndarray, np.ndarray, tuple]], elev: float, azim: float,
                joints: list[np.ndarray] | None = None) -> None:
    """Draw (vertices, faces, rgb) meshes on a 3D axis with equal aspect."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    ax.view_init(elev=elev, azim=azim)
    e, a = np.deg2rad(elev), np.deg2rad(azim)
    toward_viewer = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    allv = np.concatenate([m[0] for m in meshes])
    for v, f, rgb in meshes:
        colors = shade(v, f, np.array(rgb), toward_viewer + np.array([0.3, 0.3, 0.6]))
        ax.add_collection3d(Poly3DCollection(v[f], facecolors=colors, edgecolors="none"))
    for j in joints or []:
        ax.scatter(*j.T, s=4, c="k", depthshade=False)
    c = (allv.max(0) + allv.min(0)) / 2
    r = (allv.max(0) - allv.min(0)).max() / 2
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[1] - r, c[1] + r)
    ax.set_zlim(c[2] - r, c[2] + r)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()


VIEWS = (("palm", -90.0, -90.0), ("back", 90.0, -90.0), ("side", 0.0, -90.0))
SKIN = (0.87, 0.68, 0.58)


def render_poses(out: str, n_poses: int = 6, seed: int = 0) -> None:
    """PNG of the right hand at rest and in ``n_poses`` poses from the pose prior, 3 views each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from hand_model.model import HandModel

    model = HandModel()
    rng = np.random.default_rng(seed)
    poses = np.concatenate([np.zeros((1, 2, 45)), model.sample_poses(n_poses, rng)])  # (1 + n, 2, 45)
    z = torch.zeros(len(poses), 2, 3)
    with torch.no_grad():
        posed = model(z, torch.as_tensor(poses, dtype=torch.float32), None, z)
    verts, joints = posed.vertices[:, 1].numpy(), posed.joints[:, 1].numpy()  # right hand
    faces = model.faces[1]
    fig = plt.figure(figsize=(2.6 * len(poses), 2.6 * len(VIEWS)))
    for c in range(len(poses)):  # one column per pose, one row per view
        for r, (name, elev, azim) in enumerate(VIEWS):
            ax = fig.add_subplot(len(VIEWS), len(poses), r * len(poses) + c + 1, projection="3d")
            # model frame (fingers -x, palm -y, thumb +z) -> plot frame with z up
            to_plot = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float).T
            draw_meshes(ax, [(verts[c] @ to_plot, faces, SKIN)], elev, azim, joints=[joints[c] @ to_plot])
            ax.set_title(f"{'rest' if c == 0 else f'pose {c}'}, {name}", fontsize=9, y=0.92)
    fig.suptitle(f"HandDiffuse open hand model (right hand; {model.n_vertices} vertices, 21 joints as dots)",
                 fontsize=11)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.92, wspace=-0.25, hspace=-0.2)
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    import sys

    render_poses(sys.argv[1] if len(sys.argv) > 1 else "docs/hand_model.png")
