"""The open hand model's surface: a signed distance field of the rest-pose right hand,
meshed by marching cubes and decimated to a closed, manifold triangle mesh.

The field is a smooth union (polynomial smooth-min) of round cones: one per finger
segment (radii from ``anatomy``), four metacarpal cones and a wrist bar for the palm,
thenar and hypothenar cones. Smooth-min radii: 2 mm inside a finger, 9 mm inside the
palm, 5 mm where fingers meet the palm (the finger webs).
"""

from __future__ import annotations

import numpy as np

from hand_model.anatomy import FINGERS, MM, RADII_MM, finger_chain


def round_cone(p: np.ndarray, a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Exact signed distance from (N, 3) points to a round cone (spheres ra at a, rb at b)."""
    ba = b - a
    l2 = ba @ ba
    rr = ra - rb
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    pa = p - a
    y = pa @ ba
    z = y - l2
    x2 = np.sum((pa * l2 - y[:, None] * ba) ** 2, axis=1)
    y2 = y * y * l2
    z2 = z * z * l2
    k = np.sign(rr) * rr * rr * x2
    d_mid = (np.sqrt(x2 * a2 * il2) + y * rr) * il2 - ra
    d_b = np.sqrt(x2 + z2) * il2 - rb
    d_a = np.sqrt(x2 + y2) * il2 - ra
    return np.where(np.sign(z) * a2 * z2 > k, d_b, np.where(np.sign(y) * a2 * y2 < k, d_a, d_mid))


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a union whose crease is rounded over ~k."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def palm_sdf(p: np.ndarray) -> np.ndarray:
    d = None
    for finger in FINGERS[1:]:
        chain = finger_chain(finger)
        mcp = chain[1]
        base = np.array([-6 * MM, 0.0, mcp[2] * 0.55])  # metacarpal bases converge on the carpus
        r_mcp = RADII_MM[finger][0] * MM * 1.15
        cone = round_cone(p, base, mcp, 11.5 * MM, r_mcp)
        d = cone if d is None else smin(d, cone, 9 * MM)
    wrist = round_cone(p, np.array([4 * MM, -1 * MM, -17 * MM]), np.array([4 * MM, -1 * MM, 15 * MM]), 15 * MM, 15 * MM)
    d = smin(d, wrist, 10 * MM)
    thumb = finger_chain("thumb")
    thenar = round_cone(p, np.array([-8 * MM, -6 * MM, 12 * MM]), 0.55 * thumb[0] + 0.45 * thumb[1], 14 * MM, 12.5 * MM)
    d = smin(d, thenar, 10 * MM)
    hypothenar = round_cone(p, np.array([-12 * MM, -5 * MM, -20 * MM]), np.array([-58 * MM, -5 * MM, -26 * MM]),
                            12 * MM, 10.5 * MM)
    return smin(d, hypothenar, 9 * MM)


def finger_sdf(p: np.ndarray, finger: str) -> np.ndarray:
    chain = finger_chain(finger)
    radii = np.array(RADII_MM[finger]) * MM
    joints = chain if finger == "thumb" else chain[1:]  # thumb: CMC MCP IP tip; others: MCP PIP DIP tip
    tip_centre = joints[-1] - radii[-1] * (joints[-1] - joints[-2]) / np.linalg.norm(joints[-1] - joints[-2])
    pts = list(joints[:-1]) + [tip_centre]
    d = None
    for i in range(len(pts) - 1):
        cone = round_cone(p, pts[i], pts[i + 1], radii[i], radii[i + 1])
        d = cone if d is None else smin(d, cone, 2 * MM)
    return d


def hand_sdf(p: np.ndarray) -> np.ndarray:
    """(N, 3) points (metres, right hand rest frame) -> (N,) signed distance, negative inside."""
    d = palm_sdf(p)
    for finger in FINGERS:
        d = smin(d, finger_sdf(p, finger), 5 * MM)
    return d


def mesh_surface(voxel: float = 1.25 * MM, n_vertices: int = 1800) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``hand_sdf`` on a padded grid, decimated to about ``n_vertices``.

    Returns vertices (V, 3) float64 metres and faces (F, 3) int64, outward-facing.
    """
    import fast_simplification
    import mcubes
    import trimesh

    lo = np.array([-0.20, -0.05, -0.06])
    hi = np.array([0.035, 0.035, 0.11])
    axes = [np.arange(lo[i], hi[i] + voxel, voxel) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (X, Y, Z, 3)
    sdf = hand_sdf(grid.reshape(-1, 3)).reshape(grid.shape[:3])
    assert (sdf[[0, -1]] > 0).all() and (sdf[:, [0, -1]] > 0).all() and (sdf[:, :, [0, -1]] > 0).all()
    verts, faces = mcubes.marching_cubes(-sdf, 0.0)  # inside positive, so normals point outward
    verts = lo + verts * voxel
    mesh = trimesh.Trimesh(verts, faces, process=True)
    reduction = 1.0 - n_vertices / len(mesh.vertices)
    v, f = fast_simplification.simplify(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                                        target_reduction=reduction, agg=5)
    mesh = trimesh.Trimesh(v, f, process=True)
    if mesh.volume < 0:
        mesh.invert()
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)
