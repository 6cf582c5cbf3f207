"""The open hand model's 10 shape components, each a named anatomical variation.

MANO's shape space is a PCA of scans; ours is built from anatomy instead. Each
component changes the skeleton (joint positions) and the flesh around it (radial
scale per bone, palm thickness); the skin follows through the skinning weights:

    v' = sum_b w_vb T_b(v)                      (T_b: bone b's rest -> new map)
    shapedirs[:, :, i] = (v'(+1 SD of i) - v'(-1 SD of i)) / 2

then made orthogonal in order (Gram-Schmidt over the flattened vertex offsets), so a
component is its variation beyond what the ones before it explain ("finger-to-palm
ratio at the same overall size"), as MANO's PCA components are orthogonal. So
``betas ~ N(0, 1)`` draws each variation at about its population spread.
Bone maps keep bone directions (no component rotates a bone): a finger bone with
rest joint ``a``, child ``c`` (length L, unit axis d) maps a skin point with axial
coordinate ``u = (v - a).d`` and radial offset ``r`` to ``a' + u L'/L d + rho r``;
the palm (MANO joint 0) maps by a 2D affine map in its plane (x, z), fitted to the
wrist, thumb CMC and four MCP joints, and a scale across it (y).

Spreads (1 SD) are adult anthropometric variations: hand length varies ~6% and
breadth ~5% (e.g. ANSUR II hand length / breadth, coefficients of variation with
both sexes pooled); relative digit lengths a few percent (the 2D:4D ratio's SD is
~3%); girth and palm thickness more (~7-8%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schemas.keypoints import FINGERS, OURS_OF_MANO21

# (name, 1 SD) in the order of the betas
COMPONENTS: tuple[tuple[str, float], ...] = (
    ("size", 0.06),  # everything scales about the wrist
    ("palm_breadth", 0.05),  # palm and knuckle spacing, across the hand
    ("finger_to_palm", 0.04),  # longer fingers, shorter metacarpals: middle finger length kept
    ("finger_girth", 0.07),  # radii of every finger bone
    ("palm_thickness", 0.08),  # palm, dorsal to palmar
    ("thumb_length", 0.05),  # thumb metacarpal and phalanges
    ("index_vs_ring", 0.03),  # index longer, ring shorter (2D:4D)
    ("pinky_length", 0.05),  # pinky phalanges
    ("finger_taper", 0.08),  # tips thinner relative to the bases (radius slope along a finger)
    ("knuckle_arch", 0.5),  # transverse metacarpal arch: MCP height, in units of 2.5 mm at the middle
)
COMPONENT_NAMES = tuple(n for n, _ in COMPONENTS)
N_COMPONENTS = len(COMPONENTS)

# Our keypoint index of each of MANO's 16 joints; ours[MANO_TO_OURS[j]] is MANO joint j.
MANO_TO_OURS: tuple[int, ...] = OURS_OF_MANO21[:16]
PALM_LANDMARKS = (0, 1, 5, 9, 13, 17)  # wrist, thumb CMC, MCPs (ours)
ARCH_MM = {"index": -0.5, "middle": 1.0, "ring": 0.5, "pinky": -1.0}


def finger_points(finger: str) -> list[int]:
    """Our keypoint indices of a finger's chain, base to tip: (CMC|MCP, ..., tip), 4 points."""
    f = FINGERS.index(finger)
    return [1 + 4 * f + k for k in range(4)]


@dataclass
class ShapedSkeleton:
    keypoints: np.ndarray  # (21, 3) new keypoints, ours order, m
    radial: np.ndarray  # (15, 2) radial scale of each finger bone (MANO joints 1..15) at its joint, child
    palm_affine: np.ndarray  # (2, 3) maps (x, z, 1) -> (x', z') in the palm plane
    palm_thickness: float  # scale of y on the palm


def shaped_skeleton(rest: np.ndarray, factors: np.ndarray) -> ShapedSkeleton:
    """Apply component values ``factors`` (10,), in SD units, to the rest keypoints (21, 3)."""
    z = np.asarray(factors, float) * np.array([sd for _, sd in COMPONENTS])
    size, breadth, ratio, girth, thick, thumb, i_vs_r, pinky, taper, arch = z
    k = rest.copy()
    phalanx_scale = {f: 1.0 + ratio for f in FINGERS[1:]}
    phalanx_scale["index"] += i_vs_r
    phalanx_scale["ring"] -= i_vs_r
    phalanx_scale["pinky"] += pinky
    phalanx_scale["thumb"] = 1.0 + thumb
    # 1. metacarpals shorten as the fingers lengthen, so that the middle finger's length holds
    mid = finger_points("middle")
    phal = np.linalg.norm(np.diff(rest[mid], axis=0), axis=1).sum()
    meta = np.linalg.norm(rest[mid[0]])
    meta_scale = 1.0 - ratio * phal / meta
    for finger in FINGERS:
        idx = finger_points(finger)
        base = rest[idx[0]].copy()
        if finger != "thumb":
            base[0] *= meta_scale
            base[1] += arch * ARCH_MM[finger] * 2.5e-3
        base[2] *= 1.0 + breadth  # 2. palm breadth spreads the finger bases
        # 3. phalanges keep their directions and scale their lengths
        seg = np.diff(rest[idx], axis=0) * phalanx_scale[finger]
        k[idx] = base + np.concatenate([np.zeros((1, 3)), np.cumsum(seg, axis=0)])
    k *= 1.0 + size
    # palm plane map from the landmarks (x, z): least squares 2D affine
    src = np.c_[rest[list(PALM_LANDMARKS)][:, [0, 2]], np.ones(len(PALM_LANDMARKS))]  # (6, 3)
    dst = k[list(PALM_LANDMARKS)][:, [0, 2]]  # (6, 2)
    affine = np.linalg.lstsq(src, dst, rcond=None)[0].T  # (2, 3)
    # radial scales: girth, size, and a taper slope along each finger (u = 0 at its base, 1 at the tip)
    radial = np.ones((15, 2))
    for j in range(1, 16):
        ours = MANO_TO_OURS[j]
        finger = FINGERS[(ours - 1) // 4]
        idx = finger_points(finger)
        lengths = np.linalg.norm(np.diff(rest[idx], axis=0), axis=1)
        u = np.concatenate([[0.0], np.cumsum(lengths)]) / lengths.sum()
        pos = idx.index(ours)
        for end in range(2):
            radial[j - 1, end] = (1.0 + size) * (1.0 + girth) * (1.0 + taper * (0.5 - u[pos + end]))
    return ShapedSkeleton(k, radial, affine, (1.0 + size) * (1.0 + thick))


def bone_frames(rest: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For MANO joints 1..15: rest start a (15, 3), child c (15, 3), and length L (15,)."""
    a = np.stack([rest[MANO_TO_OURS[j]] for j in range(1, 16)])
    c = np.stack([rest[MANO_TO_OURS[j] + 1] for j in range(1, 16)])
    return a, c, np.linalg.norm(c - a, axis=1)


def deform(vertices: np.ndarray, weights: np.ndarray, rest: np.ndarray, new: ShapedSkeleton) -> np.ndarray:
    """(V, 3) rest vertices -> (V, 3) vertices of the shaped hand (weights (V, 16))."""
    out = np.zeros_like(vertices)
    # palm, MANO joint 0
    xz1 = np.c_[vertices[:, [0, 2]], np.ones(len(vertices))]
    palm = np.stack([np.zeros(len(vertices)), vertices[:, 1] * new.palm_thickness, np.zeros(len(vertices))], 1)
    palm[:, [0, 2]] = xz1 @ new.palm_affine.T
    out += weights[:, :1] * palm
    a, c, L = bone_frames(rest)
    a2, c2, L2 = bone_frames(new.keypoints)
    for b in range(15):
        d = (c[b] - a[b]) / L[b]
        rel = vertices - a[b]
        u = rel @ d  # (V,) axial coordinate, m
        radial = rel - u[:, None] * d
        t = np.clip(u / L[b], 0.0, 1.0)
        rho = new.radial[b, 0] * (1 - t) + new.radial[b, 1] * t  # (V,)
        d2 = (c2[b] - a2[b]) / L2[b]
        moved = a2[b] + (u * L2[b] / L[b])[:, None] * d2 + rho[:, None] * radial
        out += weights[:, b + 1:b + 2] * moved
    return out


def shape_directions(vertices: np.ndarray, weights: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(V, 3, 10) shapedirs: central differences at +-1 SD of each component, orthogonalised."""
    dirs = np.zeros(vertices.shape + (N_COMPONENTS,))
    for i in range(N_COMPONENTS):
        e = np.zeros(N_COMPONENTS)
        e[i] = 1.0
        plus = deform(vertices, weights, rest, shaped_skeleton(rest, e))
        minus = deform(vertices, weights, rest, shaped_skeleton(rest, -e))
        d = ((plus - minus) / 2).ravel()
        for k in range(i):  # Gram-Schmidt against the components before
            prev = dirs[:, :, k].ravel()
            d -= (d @ prev) / (prev @ prev) * prev
        dirs[:, :, i] = d.reshape(vertices.shape)
    return dirs

