"""Both hands drawn flat on a matplotlib axis: skeletons and flat-shaded meshes, left blue, right orange.

    view = Viewpoint(rig)                                      # the rig's first camera (None: along world z)
    view = Viewpoint.oblique(center, 0.8, azimuth=-60, elevation=25)  # a 3/4 view, z up (no rig)
    draw_mesh(ax, posed.vertices[k], model.faces, view)       # (2, V, 3) m
    draw_skeleton(ax, joints[k], view)                         # (42, 3) m, NaN where missing

Everything is projected to 2D by ``Viewpoint.project`` (normalized pinhole coordinates, y down),
so the caller sets the axis limits, with the y axis pointing down. Meshes are sorted far to near
(painter's order), which is what lets a plain 2D axis draw them without a 3D backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schemas.calibration import Camera, CameraRig
from data_schemas.camera_model import matrix_to_rodrigues
from data_schemas.keypoints import HAND_BONES, N_HAND_JOINTS

HAND_COLORS = ("#008cff", "#ff8c00")  # left blue, right orange: capture.detect.overlay's colours, in RGB


@dataclass
class Viewpoint:
    """A fixed viewpoint: the first camera of ``rig`` (normalized pinhole coordinates, y down), or,
    without a rig, the world seen along +z from far away (x right, y down)."""

    rig: CameraRig | None
    label: str = ""  # what ``name`` says; default: the camera's name

    @classmethod
    def oblique(cls, center: np.ndarray, distance: float, azimuth: float = -60.0,
                elevation: float = 25.0) -> "Viewpoint":
        """A pinhole ``distance`` m from ``center`` (3,), looking at it from ``azimuth`` degrees about
        world z (0 = from +x, 90 = from +y) and ``elevation`` degrees above the xy plane; z is up in
        the picture. For motion with no rig, e.g. in the generator's sequence frame."""
        # 1. the eye on a sphere around the centre
        a, e = np.deg2rad(azimuth), np.deg2rad(elevation)
        center = np.asarray(center, np.float64)
        eye = center + distance * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        # 2. camera axes (x right, y down, z forward), a right-handed frame with world z upward on screen
        forward = (center - eye) / np.linalg.norm(center - eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-9:  # looking straight down or up: any right will do
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])  # (3, 3) world -> camera
        # 3. a one-camera rig (intrinsics unused: drawing works in normalized coordinates)
        cam = Camera("oblique", (1, 1), np.eye(3), np.zeros(5), matrix_to_rodrigues(R), -R @ eye)
        return cls(CameraRig([cam]), f"seen from azimuth {azimuth:g}°, elevation {elevation:g}°")

    @property
    def eye(self) -> np.ndarray:
        """(3,) where the viewer stands, world metres."""
        return self.rig.cameras[0].center if self.rig else np.array([0.0, 0.0, -1e3])

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"seen from camera {self.rig.names[0]}" if self.rig else "seen along the world's z axis"

    def project(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points -> (..., 2) image-plane coordinates and (...,) depth."""
        if not self.rig:
            return p[..., :2], p[..., 2]
        pc = self.rig.cameras[0].to_camera(p)  # (..., 3)
        z = pc[..., 2]
        return pc[..., :2] / np.where(np.abs(z) < 1e-9, 1e-9, z)[..., None], z


def draw_skeleton(a, joints: np.ndarray, view: Viewpoint) -> None:
    """(42, 3) world joints, NaN where not triangulated."""
    xy, _ = view.project(joints)
    for h in range(2):
        pts = xy[h * N_HAND_JOINTS:(h + 1) * N_HAND_JOINTS]
        ok = np.isfinite(pts).all(-1)
        for p, c in HAND_BONES:
            if ok[p] and ok[c]:
                a.plot(pts[[p, c], 0], pts[[p, c], 1], color=HAND_COLORS[h], lw=1.2)
        a.scatter(pts[ok, 0], pts[ok, 1], color=HAND_COLORS[h], s=5)


def draw_mesh(a, vertices: np.ndarray, faces: tuple[np.ndarray, np.ndarray], view: Viewpoint) -> None:
    """(2, V, 3) world vertices of both hands, flat-shaded, far faces first (painter's order)."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb

    polys, depths, colors = [], [], []
    for h in range(2):
        v = vertices[h]
        if not np.isfinite(v).all():
            continue
        tri = v[faces[h]]  # (T, 3 corners, 3)
        xy, z = view.project(tri)  # (T, 3, 2), (T, 3)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
        ray = tri.mean(1) - view.eye  # (T, 3) from the eye to each face
        ray /= np.linalg.norm(ray, axis=-1, keepdims=True) + 1e-12
        shade = 0.35 + 0.65 * np.abs((n * ray).sum(-1))  # (T,) Lambert, lit from the eye
        polys.append(xy)
        depths.append(z.mean(1))
        colors.append(np.clip(np.array(to_rgb(HAND_COLORS[h]))[None] * shade[:, None] + 0.15 * (1 - shade[:, None]),
                              0, 1))
    if not polys:
        return
    xy, z, rgb = np.concatenate(polys), np.concatenate(depths), np.concatenate(colors)
    order = np.argsort(-z)
    a.add_collection(PolyCollection(xy[order], facecolors=rgb[order], edgecolors="none"))
