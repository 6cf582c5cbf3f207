"""Rendering the studio's two hands (with forearms) into the dome's cameras.

Per sequence a ``Look`` is drawn: skin tone (dorsal, and the lighter palmar skin),
nails, key / fill / sky lights, specular strength. Per camera a static background
(the dome's interior: a tinted wall with soft structure and texture). Per frame and
camera:

1. the posed meshes (hands from the hand model, forearms rigid with the wrist) are
   projected through the camera, lens distortion included (``Camera.project``)
2. rasterized with a z-buffer (``raster``): occlusion between the hands is exact
3. shaded per vertex in linear light (Gouraud; vertices are ~2 px apart): wrapped Lambert (skin scatters light past the
   terminator) from a key and a fill light, a sky/ground ambient, Blinn-Phong specular
4. anti-aliased by supersampling, then sRGB, slight optical blur, sensor noise

``render_view`` also returns per-pixel object ids and depth, from which the studio's
ground truth derives joint visibility.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hand_model.raster import rasterize
from data_schemas.calibration import Camera

# Skin reflectance, linear RGB, light to dark (dorsal); palms are lighter and pinker.
SKIN_TONES = np.array([
    [0.80, 0.58, 0.46], [0.72, 0.50, 0.38], [0.62, 0.42, 0.30], [0.52, 0.34, 0.23],
    [0.40, 0.25, 0.16], [0.28, 0.17, 0.11], [0.20, 0.12, 0.08],
]) ** 1.6  # sRGB-like figures -> linear
PALM_TINT = np.array([1.12, 1.0, 0.95])
NAIL = np.array([0.85, 0.62, 0.58]) ** 1.6
OBJECT_NONE, OBJECT_LEFT, OBJECT_RIGHT, OBJECT_LEFT_ARM, OBJECT_RIGHT_ARM = 0, 1, 2, 3, 4


@dataclass
class Look:
    dorsal: np.ndarray  # (3,) linear albedo
    palmar: np.ndarray  # (3,)
    key_dir: np.ndarray  # (3,) unit, towards the key light (world)
    fill_dir: np.ndarray  # (3,)
    key: float
    fill: float
    sky: float
    ground: float
    specular: float
    shininess: float
    sleeve: np.ndarray  # (3,) albedo of the sleeve covering the far forearm


def draw_look(rng: np.random.Generator) -> Look:
    tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.deg2rad(35), np.deg2rad(80))
    key_dir = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    fill_dir = np.array([-key_dir[0], -key_dir[1], 0.4])
    return Look(
        dorsal=np.clip(tone, 0, 1), palmar=np.clip(tone ** 0.85 * PALM_TINT, 0, 1),
        key_dir=key_dir, fill_dir=fill_dir / np.linalg.norm(fill_dir),
        key=rng.uniform(1.6, 2.4), fill=rng.uniform(0.35, 0.6), sky=rng.uniform(0.35, 0.5),
        ground=rng.uniform(0.12, 0.2), specular=rng.uniform(0.04, 0.1), shininess=rng.uniform(12, 30),
        sleeve=rng.uniform(0.05, 0.5) * rng.uniform(0.6, 1.0, 3),
    )


def forearm_mesh(length: float = 0.26, rings: int = 14, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A closed tapered elliptic tube in the right hand's model frame (wrist at the origin,
    forearm along +x), capped at both ends. Returns vertices (N, 3), faces (F, 3) outward."""
    x = np.linspace(-0.006, length, rings)
    t = (x - x[0]) / (x[-1] - x[0])
    ry = 0.0165 + 0.012 * t ** 0.8  # half thickness (palm to back)
    rz = 0.0290 + 0.010 * t ** 0.8  # half width
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.broadcast_to(x[:, None], (rings, segments)),
                     -0.001 + ry[:, None] * np.sin(a), -0.001 + rz[:, None] * np.cos(a)], -1)
    verts = ring.reshape(-1, 3)
    faces = []
    for i in range(rings - 1):
        for j in range(segments):
            p, q = i * segments + j, i * segments + (j + 1) % segments
            faces += [[p, p + segments, q], [q, p + segments, q + segments]]
    caps = [len(verts), len(verts) + 1]
    verts = np.vstack([verts, [x[0], -0.001, -0.001], [x[-1], -0.001, -0.001]])
    last = (rings - 1) * segments
    for j in range(segments):
        faces.append([caps[0], j, (j + 1) % segments])
        faces.append([caps[1], last + (j + 1) % segments, last + j])
    faces = np.array(faces, np.int64)
    # orient outwards: the signed volume must be positive
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    if np.einsum("ij,ij->i", v0, np.cross(v1, v2)).sum() < 0:
        faces = faces[:, [0, 2, 1]]
    return verts, faces


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N, 3) area-weighted unit vertex normals."""
    fn = np.cross(verts[faces[:, 1]] - verts[faces[:, 0]], verts[faces[:, 2]] - verts[faces[:, 0]])
    n = np.zeros_like(verts)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(faces[:, k], fn[:, c], minlength=len(verts))
    return n / (np.linalg.norm(n, axis=1, keepdims=True) + 1e-12)


@dataclass
class SceneTemplate:
    """Everything about a sequence's meshes that does not change from frame to frame."""

    faces: np.ndarray  # (F, 3) into the concatenated vertices: left hand, right hand, left arm, right arm
    albedo: np.ndarray  # (N, 3) linear
    shininess_mask: np.ndarray  # (N,) 1 on skin, 0.3 on sleeves
    object_of_face: np.ndarray  # (F,) OBJECT_* ids
    n_hand: int  # vertices per hand
    arm: np.ndarray  # (A, 3) forearm vertices in the right hand's model frame


def scene_template(hand_faces: tuple[np.ndarray, np.ndarray], hand_rest: np.ndarray, tip_ids: np.ndarray,
                   look: Look, rng: np.random.Generator) -> SceneTemplate:
    """hand_rest: (2, V, 3) rest vertices in each hand's model frame (for palm / nail colouring)."""
    V = hand_rest.shape[1]
    arm_v, arm_f = forearm_mesh()
    A = len(arm_v)
    normals = np.stack([vertex_normals(hand_rest[h], hand_faces[h]) for h in range(2)])  # (2, V, 3)
    albedo = []
    for h in range(2):
        palm = np.clip(-normals[h, :, 1] * 1.5 + 0.2, 0, 1)[:, None]  # palm faces -y
        col = look.dorsal * (1 - palm) + look.palmar * palm
        tips = hand_rest[h, tip_ids]  # (5, 3)
        near_tip = np.linalg.norm(hand_rest[h][:, None] - tips[None], axis=2).min(axis=1) < 0.011
        nail = near_tip & (normals[h, :, 1] > 0.45)
        col = np.where(nail[:, None], NAIL * (0.8 + 0.4 * look.dorsal.mean()), col)
        albedo.append(col * rng.uniform(0.93, 1.07, (V, 1)))  # blotchy skin
    sleeve_from = 0.12  # forearm skin up to here, then the sleeve
    for _ in range(2):
        skin = arm_v[:, 0] < sleeve_from
        albedo.append(np.where(skin[:, None], look.dorsal, look.sleeve) * rng.uniform(0.95, 1.05, (A, 1)))
    faces = np.concatenate([hand_faces[0], hand_faces[1] + V, arm_mirror(arm_f) + 2 * V, arm_f + 2 * V + A])
    objects = np.concatenate([np.full(len(hand_faces[0]), OBJECT_LEFT), np.full(len(hand_faces[1]), OBJECT_RIGHT),
                              np.full(len(arm_f), OBJECT_LEFT_ARM), np.full(len(arm_f), OBJECT_RIGHT_ARM)])
    shine = np.concatenate([np.ones(2 * V), np.where(arm_v[:, 0] < sleeve_from, 1.0, 0.3),
                            np.where(arm_v[:, 0] < sleeve_from, 1.0, 0.3)])
    return SceneTemplate(faces, np.concatenate(albedo), shine, objects, V, arm_v)


def arm_mirror(faces: np.ndarray) -> np.ndarray:
    return faces[:, [0, 2, 1]]  # mirrored geometry keeps outward faces with flipped winding


def pose_arms(template: SceneTemplate, rot: np.ndarray, wrist: np.ndarray, wrist_rest: np.ndarray) -> np.ndarray:
    """(2, A, 3) world forearm vertices; rot (2, 3, 3) hand root rotations, wrist (2, 3) posed wrist
    joints, wrist_rest (2, 3) rest wrist joints in each model frame."""
    mirror = np.array([[-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    local = template.arm[None] * mirror[:, None]  # (2, A, 3) left arm mirrored
    return np.einsum("hab,hnb->hna", rot, local - wrist_rest[:, None]) + wrist[:, None]


def make_background(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) linear RGB: a tinted wall with large soft shapes and fine texture."""
    W, H = camera.size
    base = rng.uniform(0.08, 0.45) * rng.uniform(0.7, 1.0, 3)
    yy, xx = np.mgrid[0:H, 0:W] / max(W, H)
    g = rng.normal(0, 1, 2)
    img = base[None, None] * (1 + 0.35 * (g[0] * (xx - 0.5) + g[1] * (yy - 0.5)))[..., None]
    small = (max(4, W // 64), max(4, H // 64))
    for scale, amp in ((1, 0.25), (4, 0.08)):
        noise = rng.normal(0, 1, (small[1] * scale, small[0] * scale, 3)).astype(np.float32)
        noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.2), (W, H), interpolation=cv2.INTER_CUBIC)
        img = img * (1 + amp * noise)
    for _ in range(rng.integers(2, 6)):  # dome struts / panels
        x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
        angle = rng.uniform(0, np.pi)
        width = rng.uniform(0.004, 0.03) * W
        d = np.abs((np.mgrid[0:H, 0:W][1] - x0) * np.sin(angle) - (np.mgrid[0:H, 0:W][0] - y0) * np.cos(angle))
        img = np.where((d < width)[..., None], img * rng.uniform(0.4, 1.6), img)
    return np.clip(img, 0, 1).astype(np.float32)


def key_light_visibility(vertices: np.ndarray, faces: np.ndarray, light_dir: np.ndarray,
                         texel: float = 0.0015, bias: float = 0.004) -> np.ndarray:
    """(N,) in [0, 1]: how much of the key light reaches each vertex (shadow mapping).

    The scene is rasterized orthographically along ``light_dir`` into a depth map of
    ``texel``-sized cells; a vertex further from the light than the map's nearest surface
    (plus ``bias``) is shadowed. 3 x 3 percentage-closer filtering softens the edges.
    """
    L = light_dir / np.linalg.norm(light_dir)
    u = np.cross(L, [0.0, 0.0, 1.0] if abs(L[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(L, u)
    uv = np.stack([vertices @ u, vertices @ v], axis=1)
    lo = uv.min(axis=0) - 2 * texel
    grid = (uv - lo) / texel  # (N, 2) texel coordinates
    size = (int(grid[:, 0].max()) + 3, int(grid[:, 1].max()) + 3)
    depth = 1.0 - vertices @ L  # > 0, grows away from the light
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    frag = rasterize(grid, depth, faces, fn @ L > 0, size)
    dmap = np.full(size[0] * size[1], np.inf)
    dmap[frag.pixel] = frag.depth
    dmap = dmap.reshape(size[1], size[0])
    lit = np.zeros(len(vertices))
    cx, cy = np.rint(grid[:, 0]).astype(int), np.rint(grid[:, 1]).astype(int)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            x = np.clip(cx + dx, 0, size[0] - 1)
            y = np.clip(cy + dy, 0, size[1] - 1)
            lit += depth <= dmap[y, x] + bias
    return (lit / 9).astype(np.float32)


def shade(vertices: np.ndarray, normals: np.ndarray, template: SceneTemplate, look: Look,
          eye: np.ndarray, lit: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) linear colour of every vertex seen from ``eye``; ``lit`` (N,) key-light visibility."""
    view = eye - vertices
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    n = np.where((normals * view).sum(1, keepdims=True) < 0, -normals, normals)  # silhouette vertices
    wrap = 0.35
    key = np.clip((n @ look.key_dir + wrap) / (1 + wrap), 0, None)
    if lit is not None:
        key = key * (0.15 + 0.85 * lit)  # skin scatters some light into its own shadow
    fill = np.clip((n @ look.fill_dir + wrap) / (1 + wrap), 0, None)
    amb = look.ground + (look.sky - look.ground) * (0.5 + 0.5 * n[:, 2])
    diffuse = template.albedo * (look.key * key + look.fill * fill + amb)[:, None]
    half = look.key_dir + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = look.specular * template.shininess_mask * np.clip((n * half).sum(1), 0, 1) ** look.shininess * (key > 0)
    return (diffuse + spec[:, None]).astype(np.float32)


@dataclass
class View:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    objects: np.ndarray  # (H, W) uint8 OBJECT_* of the nearest surface
    depth: np.ndarray  # (H, W) float32 m, inf where background


def render_view(camera: Camera, vertices: np.ndarray, template: SceneTemplate, look: Look,
                background: np.ndarray, rng: np.random.Generator, lit: np.ndarray | None = None,
                supersample: int = 2, normals: np.ndarray | None = None) -> View:
    """vertices: (N, 3) world positions of the scene's concatenated vertices; lit: (N,) their
    key-light visibility and normals (N, 3) their normals (both the same for every camera of
    a frame: pass them in to compute them once). ``background`` (H, W, 3) or already at the
    supersampled size."""
    W, H = camera.size
    s = supersample
    pc = camera.to_camera(vertices)  # (N, 3)
    pix = camera.project(vertices)  # (N, 2) px, distorted
    pix_s = (pix + 0.5) * s - 0.5  # the same point in the supersampled grid's pixel-centre convention
    faces = template.faces
    if normals is None:
        normals = vertex_normals(vertices, faces)
    # 1. front faces: the face normal points towards the camera
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    front = np.einsum("ij,ij->i", fn, camera.center - vertices[faces[:, 0]]) > 0
    # 2.
    frag = rasterize(pix_s, pc[:, 2], faces, front, (W * s, H * s))
    # 3. shade the vertices (they are ~2 px apart), interpolate the colour (Gouraud)
    color = shade(vertices, normals, template, look, camera.center, lit)[faces[frag.face]]  # (P, 3, 3)
    color = np.einsum("pk,pkc->pc", frag.bary.astype(np.float32), color)
    if background.shape[:2] != (H * s, W * s):
        background = cv2.resize(background, (W * s, H * s), interpolation=cv2.INTER_LINEAR)
    big = background.reshape(-1, 3).copy()
    big[frag.pixel] = color
    objects = np.zeros(W * s * H * s, np.uint8)
    objects[frag.pixel] = template.object_of_face[frag.face]
    depth = np.full(W * s * H * s, np.inf, np.float32)
    depth[frag.pixel] = frag.depth
    # 4.
    img = big.reshape(H * s, W * s, 3)
    if s > 1:
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    img = np.clip(img, 0, 1) ** (1 / 2.2)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.6)
    img = img + rng.normal(0, 0.008, img.shape).astype(np.float32)
    bgr = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    centre = (np.arange(H) * s + s // 2)[:, None] * (W * s) + (np.arange(W) * s + s // 2)[None]
    return View(np.ascontiguousarray(bgr), objects[centre], depth[centre])
