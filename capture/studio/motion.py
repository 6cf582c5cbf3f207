"""Procedural two-hand interaction motion for the synthetic capture studio.

    motion = make_motion("communication", n_frames=300, fps=30.0, seed=3, model=HandModel())
    motion.global_orient  # (F, 2, 3) world axis-angle     motion.hand_pose  # (F, 2, 45)
    motion.transl         # (F, 2, 3) m                     motion.betas      # (2, 10)
    vertices, joints = pose_motion(motion, model)          # (F, 2, V, 3), (F, 2, 21, 3)

World frame as the studio's (``capture.studio.rig``): metres, z up, origin at the centre
of the capture volume. The subject sits on the -y side: each forearm leaves its wrist
towards -y and downwards, along the hand model's forearm axis (+x for the right hand, -x
for the mirrored left; ``FOREARM_AXIS``), as the renderer draws it.

The paper's four categories (``FAMILIES``):

* ``random_interaction``: hands approach, touch and release in random ways: a fingertip on
  the other palm or back, palms pressed, fingers interlaced, one hand grasping the other's
  fingers, a palm on the other's back.
* ``communication``: clapping, a handshake-like clasp, pointing at the other palm, counting
  on the other hand's fingers, rubbing the palms.
* ``tutting``: angular finger shapes (L, table, flat, point) touching fingertip to
  fingertip or fingertips to palm at right angles, both hands then turning together about
  the contact.
* ``sign``: the non-dominant (left) hand holds a base handshape; the dominant hand runs
  through handshapes of ``HANDSHAPES`` and touches targets on it (palm, back, fingertips).

How a sequence is made:

1. A family's script appends keyframes (``Key``): each hand's rotation, anatomical joint
   angles (``hand_model.pose_prior``) and wrist position. A contact keyframe is
   placed by ``Script.touch``: the active hand's landmark (a fingertip, the palm centre...)
   faces the target's landmark, then the hands are slid apart or together along the
   contact normal until the exact overlap (``hand_model.contact``) is ``PRESS``.
   Each keyframe's duration follows from the longest joint path to it (0.3-2 s, mean joint
   speed 0.2-0.4 m/s). A transition that would pass one hand through the other goes round
   it (a key half-way with the hands drawn apart); an action whose frames would turn a
   forearm out of its plausible range or cross the arms is taken back and another drawn.
2. Frames are sampled between keyframes with a minimum-jerk profile (zero velocity and
   acceleration at each keyframe): rotations slerped about a pivot (the contact point or
   the palm), joint angles and pivots blended linearly in the profile. Angles inside the
   joint limits at the keys stay inside (the limits are a box in the angles).
3. Frames where one hand is more than ``DEPTH_SOFT`` inside the other are pushed apart
   along the contact normal; the push is the running maximum of the need smoothed by a
   window of the same width, so it is at least the need and smooth in time; repeated
   until every frame is below ``DEPTH_SOFT``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from capture.studio.render import vertex_normals
from hand_model import pose_prior
from hand_model.contact import hand_contact
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel

FAMILIES = ("random_interaction", "communication", "tutting", "sign")  # the paper's four categories

FOREARM_AXIS = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # model frame, left (mirrored) and right
FOREARM_LENGTH = 0.25  # m
FOREARM_MIN_BACK = 0.2  # a forearm's direction . (0, -1, 0) is at least this
FOREARM_MAX_UP = 0.5  # ... and its z component at most this
FOREARM_MIN_GAP = 0.03  # m, between the two forearms' axes (from FOREARM_START along them)
FOREARM_START = 0.02  # m from the wrist: the wrists themselves may meet when the palms press
ELBOWS_APART = 0.12  # m, the generator keeps the right elbow this far right of the left (no crossed arms)
PRESS = 0.0015  # m, overlap of a contact: a light press
DEPTH_SOFT = 0.0025  # m, deeper frames are pushed apart
VOLUME_HALF = 0.2  # m, keyframes keep every vertex inside this cube about the origin (frames: 0.25)

_DEG = np.pi / 180
_BACK = np.array([0.0, -1.0, 0.0])


@dataclass
class HandMotion:
    category: str
    fps: float
    global_orient: np.ndarray  # (F, 2, 3) float32 axis-angle, world frame
    hand_pose: np.ndarray  # (F, 2, 45) float32, relative to the flat hand, MANO joint order
    betas: np.ndarray  # (2, 10) float32, one person: the same for both hands
    transl: np.ndarray  # (F, 2, 3) float32 m, smplx transl (the wrist joint is transl + rest wrist)

    @property
    def n_frames(self) -> int:
        return int(self.global_orient.shape[0])


# -- handshapes: anatomical angles (twist, abduction, flexion) of the right hand, MANO order ----

_MANO_FINGER = {"index": 0, "middle": 1, "pinky": 2, "ring": 3}  # first joint of each finger / 3


def handshape(fingers: dict[str, tuple[float, float, float, float]],
              thumb: tuple[float, float, float, float, float]) -> np.ndarray:
    """(15, 3) radians, clipped into the joint limits. fingers: name -> (MCP flexion, PIP, DIP,
    MCP abduction (+ towards the little finger)) degrees; thumb: (CMC twist, CMC abduction,
    CMC flexion, MCP flexion, IP flexion) degrees."""
    a = np.zeros((15, 3))
    for name, (mcp, pip, dip, abd) in fingers.items():
        j = 3 * _MANO_FINGER[name]
        a[j], a[j + 1], a[j + 2] = (0, abd, mcp), (0, 0, pip), (0, 0, dip)
    tw, ab, fl, mcp, ip = thumb
    a[12], a[13], a[14] = (tw, ab, fl), (0, 0, mcp), (0, 0, ip)
    lo, hi = pose_prior.limits_deg()
    return np.clip(a, lo + 1e-3, hi - 1e-3) * _DEG


def _curl(mcp: float, pip: float, dip: float, spread: float = 0.0) -> dict:
    return {"index": (mcp, pip, dip, -spread), "middle": (mcp, pip, dip, 0.0),
            "ring": (mcp, pip, dip, 0.5 * spread), "pinky": (mcp, pip, dip, spread)}


_FIST = _curl(85, 95, 60)
_THUMB_TUCKED = (20, 35, 40, 45, 40)
_THUMB_OUT = (-20, -10, -20, 0, 0)
HANDSHAPES: dict[str, np.ndarray] = {
    "flat": handshape(_curl(0, 0, 0), (0, 0, 0, 0, 0)),
    "relaxed": handshape(_curl(15, 20, 10, 4), (5, 10, 5, 10, 10)),
    "spread": handshape(_curl(5, 5, 5, 20), _THUMB_OUT),
    "fist": handshape(_FIST, _THUMB_TUCKED),
    "point": handshape({**_FIST, "index": (0, 0, 0, 0)}, (20, 30, 40, 45, 40)),
    "V": handshape({**_FIST, "index": (0, 0, 0, -15), "middle": (0, 0, 0, 12)}, _THUMB_TUCKED),
    "L": handshape({**_FIST, "index": (0, 0, 0, 0)}, _THUMB_OUT),
    "O": handshape(_curl(45, 60, 35), (20, 45, 35, 20, 20)),
    "C": handshape(_curl(30, 40, 20), (0, 35, 10, 10, 10)),
    "table": handshape(_curl(88, 0, 0), (0, 0, 0, 0, 0)),  # fingers straight at a right angle
    "grip": handshape(_curl(70, 80, 45), (15, 40, 30, 30, 30)),  # closing around something
}


# -- orientation ------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def hand_rotation(hand: int, forearm: np.ndarray, palm: np.ndarray) -> np.ndarray:
    """(3, 3) world rotation of a hand whose forearm points along ``forearm`` and whose palm
    faces ``palm`` (made orthogonal to the forearm). hand: 0 left, 1 right."""
    f = _unit(np.asarray(forearm, float))
    n = _unit(palm - (palm @ f) * f)
    x = f * FOREARM_AXIS[hand, 0]  # model +x: along the forearm (right), the fingers (left)
    y = -n  # the palm faces model -y
    return np.stack([x, y, np.cross(x, y)], axis=1)


def forearm_directions(global_orient: np.ndarray) -> np.ndarray:
    """(F, 2, 3) axis-angle -> (F, 2, 3) unit world direction from each wrist along its forearm."""
    R = Rotation.from_rotvec(np.asarray(global_orient, float).reshape(-1, 3)).as_matrix()
    R = R.reshape(global_orient.shape[:-1] + (3, 3))
    return np.einsum("...ab,...b->...a", R, np.broadcast_to(FOREARM_AXIS, global_orient.shape))


def _segment_distance(p0, d0, p1, d1) -> np.ndarray:
    """(..., 3) segments p + t d, t in [0, 1] -> (...,) smallest distance between them."""
    r = p0 - p1
    a, e, b = (d0 * d0).sum(-1), (d1 * d1).sum(-1), (d0 * d1).sum(-1)
    c, f = (d0 * r).sum(-1), (d1 * r).sum(-1)
    den = np.maximum(a * e - b * b, 1e-12)
    s = np.clip((b * f - c * e) / den, 0, 1)
    t = np.clip((b * s + f) / e, 0, 1)
    s = np.clip((b * t - c) / a, 0, 1)
    return np.linalg.norm(r + s[..., None] * d0 - t[..., None] * d1, axis=-1)


def forearm_gap(forearm: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(..., 2, 3) forearm directions and wrist positions -> (...,) distance between the two
    forearm axes from FOREARM_START to FOREARM_LENGTH along each."""
    p = wrist + FOREARM_START * forearm
    d = (FOREARM_LENGTH - FOREARM_START) * forearm
    return _segment_distance(p[..., 0, :], d[..., 0, :], p[..., 1, :], d[..., 1, :])


def elbows_apart(forearm: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(..., 2, 3) forearm directions and wrists -> (...,) how far (m, along x) the right elbow is to
    the right of the left elbow: arms crossed in front of the body make it small or negative."""
    elbow = wrist + FOREARM_LENGTH * forearm
    return elbow[..., 1, 0] - elbow[..., 0, 0]


def forearm_ok(forearm: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(..., 3) forearm directions -> (...,) bool, pointing back towards the subject."""
    return (forearm @ _BACK >= FOREARM_MIN_BACK + margin) & (forearm[..., 2] <= FOREARM_MAX_UP - margin)


def _rot_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return Rotation.from_rotvec(_unit(axis) * angle).as_matrix()


def _align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking unit a to unit b."""
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return _rot_about(perp, np.pi)
    return _rot_about(axis, np.arctan2(s, c))


def _random_direction_near(v: np.ndarray, max_angle: float, rng: np.random.Generator) -> np.ndarray:
    axis = np.cross(v, rng.normal(size=3))
    return _rot_about(axis, rng.uniform(0, max_angle)) @ v


# -- landmarks on the hand surface ---------------------------------------------------------


@dataclass
class Landmarks:
    """Vertex ids of surface points that touch, the same on both hands (the left mesh is the
    right's mirror image), and their neighbourhoods for a stable normal."""

    ids: dict[str, int]
    rings: dict[str, np.ndarray]  # name -> vertex ids within 8 mm of the landmark at rest

    @staticmethod
    def of(model: HandModel) -> Landmarks:
        with torch.no_grad():
            out = model(torch.zeros(1, 2, 3), torch.zeros(1, 2, 45))
        v = out.vertices[0, 1].numpy().astype(np.float64)
        j = out.joints[0, 1].numpy().astype(np.float64)  # (21, 3) ours
        n = vertex_normals(v, model.faces[1])
        palm_x, mid_z = 0.55 * j[9, 0], 0.5 * (j[5, 2] + j[17, 2])

        def nearest(point, facing, min_dot=0.6):
            ok = np.flatnonzero(n @ facing >= min_dot)
            return int(ok[np.argmin(np.linalg.norm(v[ok] - point, axis=1))])

        thumb_palmar = np.array([0.0, -0.6, -0.8])
        ids = {
            "palm": nearest(np.array([palm_x, j[9, 1], mid_z]), np.array([0, -1.0, 0])),
            "heel": nearest(np.array([0.25 * j[9, 0], j[9, 1], mid_z]), np.array([0, -1.0, 0])),
            "back": nearest(np.array([palm_x, j[9, 1], mid_z]), np.array([0, 1.0, 0])),
            "knuckles": nearest(j[9], np.array([0, 1.0, 0])),
            "edge": nearest(np.array([palm_x, j[17, 1], j[17, 2]]), np.array([0, 0, -1.0])),
            "side_index": nearest(0.5 * (j[5] + j[6]), np.array([0, 0, 1.0])),
        }
        tips = model.tip_ids.cpu().numpy()  # thumb, index, middle, ring, pinky
        for k, (finger, dip, tip) in enumerate(zip(("thumb", "index", "middle", "ring", "pinky"),
                                                   (3, 7, 11, 15, 19), (4, 8, 12, 16, 20))):
            ids[f"tip_{finger}"] = int(tips[k])
            facing = thumb_palmar if finger == "thumb" else np.array([0, -1.0, 0])
            ids[f"pad_{finger}"] = nearest(0.5 * (j[dip] + j[tip]), _unit(facing), 0.5)
        rings = {k: np.flatnonzero(np.linalg.norm(v - v[i], axis=1) < 0.008) for k, i in ids.items()}
        return Landmarks(ids, rings)


# -- keyframes ---------------------------------------------------------------------------------


@dataclass
class Key:
    rot: np.ndarray  # (2, 3, 3) world rotation of each hand
    angles: np.ndarray  # (2, 15, 3) anatomical angles (right-hand convention; the left mirrors them)
    wrist: np.ndarray  # (2, 3) world wrist joint
    pivot: np.ndarray  # (2, 3) world point each hand turns about towards the next key
    push: np.ndarray  # (3,) unit: the right hand separates along +push, the left along -push
    weights: np.ndarray  # (2,) share of a separation each hand takes
    contact: bool = False


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    return tau ** 3 * (10 - 15 * tau + 6 * tau ** 2)


class Script:
    """A growing string of keyframes and their times, with the hand model to place them."""

    def __init__(self, model: HandModel, betas: np.ndarray, rng: np.random.Generator):
        self.model, self.rng = model, rng
        self.betas = torch.as_tensor(betas, dtype=torch.float32)
        with torch.no_grad():
            self.rest_wrist = model.rest_joints(self.betas)[:, 0].numpy().astype(np.float64)  # (2, 3)
        self.marks = Landmarks.of(model)
        self.keys: list[Key] = []
        self.times: list[float] = []
        self.failed = False
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, Key]] = {}  # id(key) -> vertices, joints, key

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0

    @property
    def last(self) -> Key:
        return self.keys[-1]

    # posing
    def forward(self, rot: np.ndarray, angles: np.ndarray, wrist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(F, 2, 3, 3) rotations, (F, 2, 15, 3) angles, (F, 2, 3) wrist joints -> world (F, 2, V, 3)
        vertices and (F, 2, 21, 3) joints."""
        pose = pose_prior.to_axis_angle(angles, self.model.frames)  # (F, 2, 45)
        pose[:, 0] *= AXIS_ANGLE_MIRROR
        go = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(-1, 2, 3)
        with torch.no_grad():
            out = self.model(torch.as_tensor(go, dtype=torch.float32), torch.as_tensor(pose, dtype=torch.float32),
                             self.betas, torch.as_tensor(wrist - self.rest_wrist, dtype=torch.float32))
        return out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)

    def local(self, rot: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(2, V, 3) vertices and (2, 21, 3) joints of one pose with both wrist joints at the origin."""
        v, j = self.forward(rot[None], angles[None], np.zeros((1, 2, 3)))
        return v[0], j[0]

    def posed(self, key: Key) -> tuple[np.ndarray, np.ndarray]:
        """World (2, V, 3) vertices and (2, 21, 3) joints of a key (cached per key)."""
        if id(key) not in self._cache:
            v, j = self.local(key.rot, key.angles)
            self._cache[id(key)] = (v + key.wrist[:, None], j + key.wrist[:, None], key)
        v, j, _ = self._cache[id(key)]
        return v, j

    def normal(self, hand: int, mark: str, verts: np.ndarray) -> np.ndarray:
        """Outward normal at a landmark of posed (2, V, 3) vertices, averaged over its neighbourhood."""
        n = vertex_normals(verts[hand], self.model.faces[hand])
        return _unit(n[self.marks.rings[mark]].mean(0))

    # timeline
    def between(self, k0: Key, k1: Key, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Vertices and joints of n frames from k0 to k1 (both included)."""
        fr = sample([k0, k1], [0.0, 1.0], n, n - 1)
        return self.forward(fr.rot, fr.angles, fr.wrist)

    def add(self, key: Key, speed: float | None = None, duration: float | None = None,
            avoid: bool = False) -> Key:
        """Append a key (moved into the volume); its duration follows from the longest joint path
        at ``speed`` m/s. With ``avoid``, a hand that would pass through the other on the way goes
        round it: a key half-way with the hands drawn apart is put in between."""
        key = self.contain(key)
        if self.keys and avoid and self._collides(self.last, key):
            self._add_via(key, speed)
        if self.keys and duration is None:
            _, j = self.between(self.last, key)
            path = float(np.linalg.norm(np.diff(j, axis=0), axis=-1).sum(0).max())
            speed = speed or self.rng.uniform(0.2, 0.32)
            duration = float(np.clip(path / speed, 0.3, 2.0))
        self.times.append(self.duration + (duration or 0.0) if self.keys else 0.0)
        self.keys.append(key)
        return key

    def _collides(self, k0: Key, k1: Key, n: int = 9) -> bool:
        v, _ = self.between(k0, k1, n)
        return bool(hand_contact(v[1:-1], self.model.faces, with_distance=False).depth.max() > DEPTH_SOFT)

    def _add_via(self, key: Key, speed: float | None) -> None:
        mid = sample([self.last, key], [0.0, 1.0], 3, 2)  # t = 0, 0.5, 1
        v, _ = self.forward(mid.rot, mid.angles, mid.wrist)
        d = v[1, 1].mean(0) - v[1, 0].mean(0)  # from the left hand towards the right, half-way
        d = _unit(d) if np.linalg.norm(d) > 1e-3 else np.array([1.0, 0, 0])
        for apart in (0.04, 0.07, 0.1, 0.14):
            shift = np.stack([-apart * d, apart * d])
            via = self.contain(Key(rot=mid.rot[1], angles=mid.angles[1], wrist=mid.wrist[1] + shift,
                                   pivot=0.5 * (self.last.pivot + key.pivot) + shift, push=d, weights=np.full(2, 0.5)))
            if not self._collides(self.last, via, 6) and not self._collides(via, key, 6):
                break
        else:
            self.failed = True  # no way round: the action is taken back (plausible_since)
        self.add(via, speed=speed)

    # transactions: an action whose frames would be implausible is taken back
    def checkpoint(self) -> int:
        return len(self.keys)

    def rollback(self, n: int) -> None:
        del self.keys[n:], self.times[n:]

    def plausible_since(self, n: int, rate: float = 15.0) -> bool:
        """Forearms plausible (FOREARM_* with a small margin) in every frame since key n."""
        keys, times = self.keys[max(n - 1, 0):], np.asarray(self.times[max(n - 1, 0):])
        if len(keys) < 2:
            return True
        fr = sample(keys, list(times - times[0]), int((times[-1] - times[0]) * rate) + 2, rate)
        f = np.einsum("fhab,hb->fha", fr.rot, FOREARM_AXIS)
        failed, self.failed = self.failed, False
        return bool(not failed and forearm_ok(f, 0.01).all()
                    and (forearm_gap(f, fr.wrist) >= FOREARM_MIN_GAP + 0.005).all()
                    and (elbows_apart(f, fr.wrist) >= ELBOWS_APART - 0.02).all())

    def hold(self, seconds: float) -> None:
        self.add(replace(self.last), duration=seconds)

    # placing
    def separated(self, key: Key, gap: float) -> Key:
        """The key with the hands moved apart by ``gap`` along its push direction."""
        shift = gap * key.push * np.array([[-key.weights[0]], [key.weights[1]]])
        return replace(key, wrist=key.wrist + shift, pivot=key.pivot + shift, contact=False)

    def overlap(self, verts: np.ndarray) -> float:
        """Depth of the deeper hand inside the other (> 0), or minus the gap between them."""
        c = hand_contact(verts[None], self.model.faces)
        return float(c.depth[0]) if c.depth[0] > 0 else -float(c.distance[0])

    def settle(self, key: Key, press: float = PRESS, tol: float = 3e-4) -> Key:
        """Slide the hands along the key's push direction until they overlap by ``press``."""
        v, _ = self.posed(key)
        dirs = key.push * np.array([[-key.weights[0]], [key.weights[1]]])  # (2, 3) per unit separation

        def g(s):  # falls as the hands separate
            return self.overlap(v + s * dirs[:, None]) - press

        # 1. bracket the root: g(lo) >= 0 > g(hi)
        g0 = g(0.0)
        step = max(abs(g0), 0.002)
        if g0 >= 0:
            lo, glo, hi = 0.0, g0, step
            ghi = g(hi)
            while ghi >= 0 and hi < 0.3:
                lo, glo, step = hi, ghi, 2 * step
                hi = lo + step
                ghi = g(hi)
        else:
            hi, ghi, lo = 0.0, g0, -step
            glo = g(lo)
            while glo < 0 and lo > -0.3:
                hi, ghi, step = lo, glo, 2 * step
                lo = hi - step
                glo = g(lo)
        if glo < 0 or ghi >= 0:  # no contact along this direction: the action is taken back
            self.failed = True
        # 2. Illinois regula falsi
        s, gs = (lo, glo) if abs(glo) < abs(ghi) else (hi, ghi)
        side = 0
        for _ in range(16):
            if abs(gs) <= tol:
                break
            s = (lo * ghi - hi * glo) / (ghi - glo)
            gs = g(s)
            if gs >= 0:
                lo, glo = s, gs
                ghi = ghi / 2 if side == 1 else ghi
                side = 1
            else:
                hi, ghi = s, gs
                glo = glo / 2 if side == -1 else glo
                side = -1
        wrist = key.wrist + s * dirs
        pivot = np.repeat((key.pivot + s * dirs).mean(0, keepdims=True), 2, axis=0)
        return self.contain(replace(key, wrist=wrist, pivot=pivot, contact=True))

    def contain(self, key: Key) -> Key:
        """Shift both hands together so every vertex is inside the volume cube (if they fit)."""
        v, _ = self.posed(key)
        lo, hi = v.reshape(-1, 3).min(0), v.reshape(-1, 3).max(0)
        shift = np.maximum(-VOLUME_HALF - lo, 0) - np.maximum(hi - VOLUME_HALF, 0)
        if not shift.any():
            return key
        return replace(key, wrist=key.wrist + shift, pivot=key.pivot + shift)

    def touch(self, target: int, rot_t: np.ndarray, shape_t: np.ndarray, mark_t: str, at: np.ndarray,
              shape_a: np.ndarray, mark_a: str, forearm_a: np.ndarray, tilt: float = 0.0,
              weights: tuple[float, float] = (0.5, 0.5), rot_a: np.ndarray | None = None,
              offset: np.ndarray | None = None, margin: float = 0.03) -> Key:
        """A contact key: the target hand (rotation ``rot_t``, angles ``shape_t``) has its landmark
        ``mark_t`` at ``at``; the active hand (angles ``shape_a``) touches it with ``mark_a``.

        1. The active hand turns so its landmark's normal faces the target's (tilted by up to
           ``tilt`` rad), then about that normal so its forearm is plausible and near ``forearm_a``
           (36 turns scored); or it takes ``rot_a``.
        2. Both landmarks are put at ``at`` (the active one shifted by ``offset``); if the forearms
           are plausible (``feasible`` with ``margin``; else the key is returned unsettled and
           ``failed`` is set), ``settle`` slides the hands along the target's normal (``weights``:
           each hand's share) to a light press.
        """
        active = 1 - target
        at_a = at if offset is None else at + offset
        angles = np.zeros((2, 15, 3))
        angles[target], angles[active] = shape_t, shape_a
        rot = np.stack([rot_t, rot_t])
        rot[active] = np.eye(3)
        vl, _ = self.local(rot, angles)  # the active hand in its model frame for now
        n_t, n_a = self.normal(target, mark_t, vl), self.normal(active, mark_a, vl)
        if rot_a is None:  # 1.
            want = _random_direction_near(-n_t, tilt, self.rng) if tilt > 0 else -n_t
            R0 = _align(n_a, want)
            f_t = rot_t @ FOREARM_AXIS[target]
            wrist_t = at - vl[target, self.marks.ids[mark_t]]
            best = -np.inf
            for psi in np.linspace(0, 2 * np.pi, 36, endpoint=False):
                R = _rot_about(want, psi) @ R0
                f = R @ FOREARM_AXIS[active]
                fa, wr = np.zeros((2, 3)), np.zeros((2, 3))
                fa[target], fa[active] = f_t, f
                wr[target], wr[active] = wrist_t, at_a - R @ vl[active, self.marks.ids[mark_a]]
                score = f @ _unit(forearm_a) - 20 * (
                    max(0.0, FOREARM_MIN_BACK + 0.1 - f @ _BACK) + max(0.0, f[2] - FOREARM_MAX_UP + 0.1)
                    + max(0.0, FOREARM_MIN_GAP + 0.015 - float(forearm_gap(fa, wr)))
                    + max(0.0, ELBOWS_APART + 0.03 - float(elbows_apart(fa, wr))))
                if score > best:
                    best, rot_a = score, R
        rot[active] = rot_a
        vl, _ = self.local(rot, angles)  # 2.
        wrist = np.stack([at - vl[target, self.marks.ids[mark_t]], at_a - vl[active, self.marks.ids[mark_a]]])
        wrist = wrist if target == 0 else wrist[::-1].copy()
        key = Key(rot=rot, angles=angles, wrist=wrist, pivot=np.stack([at, at]), push=n_t if target == 0 else -n_t,
                  weights=np.asarray(weights, float))
        if not self.feasible(key, margin):  # settling moves the hands by millimetres only
            self.failed = True
            return key
        return self.settle(key)

    def feasible(self, key: Key, margin: float = 0.05) -> bool:
        f = np.einsum("hab,hb->ha", key.rot, FOREARM_AXIS)
        return bool(forearm_ok(f, margin).all() and forearm_gap(f, key.wrist) >= FOREARM_MIN_GAP + 0.01
                    and elbows_apart(f, key.wrist) >= ELBOWS_APART)

    def turn_pair(self, key: Key, axis: np.ndarray, angle: float, about: np.ndarray) -> Key:
        """Both hands turned rigidly by ``angle`` about ``axis`` through ``about``: contacts kept."""
        Q = _rot_about(axis, angle)
        return replace(key, rot=Q @ key.rot, wrist=about + (key.wrist - about) @ Q.T,
                       pivot=np.stack([about, about]), push=Q @ key.push)


# -- sampling keyframes into frames -----------------------------------------------------------


@dataclass
class Frames:
    rot: np.ndarray  # (F, 2, 3, 3)
    angles: np.ndarray  # (F, 2, 15, 3)
    wrist: np.ndarray  # (F, 2, 3)
    push: np.ndarray  # (F, 3)
    weights: np.ndarray  # (F, 2)


def sample(keys: list[Key], times: list[float], n_frames: int, fps: float) -> Frames:
    """Minimum-jerk interpolation of the keys at t = i / fps."""
    t = np.arange(n_frames) / fps
    times = np.asarray(times)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 2)  # (F,)
    span = np.maximum(times[seg + 1] - times[seg], 1e-9)
    s = _min_jerk(np.clip((t - times[seg]) / span, 0, 1))  # (F,)
    F = n_frames
    rot, angles, wrist = np.zeros((F, 2, 3, 3)), np.zeros((F, 2, 15, 3)), np.zeros((F, 2, 3))
    push, weights = np.zeros((F, 3)), np.zeros((F, 2))
    for i in range(F):
        k0, k1, w = keys[seg[i]], keys[seg[i] + 1], s[i]
        lerp = lambda a, b: (1 - w) * a + w * b  # noqa: E731
        for h in range(2):
            rel = Rotation.from_matrix(k0.rot[h].T @ k1.rot[h]).as_rotvec()
            rot[i, h] = k0.rot[h] @ Rotation.from_rotvec(w * rel).as_matrix()
            l0 = k0.rot[h].T @ (k0.pivot[h] - k0.wrist[h])  # pivot in the hand's frame
            l1 = k1.rot[h].T @ (k1.pivot[h] - k1.wrist[h])
            wrist[i, h] = lerp(k0.pivot[h], k1.pivot[h]) - rot[i, h] @ lerp(l0, l1)
        angles[i] = lerp(k0.angles, k1.angles)
        p = lerp(k0.push, k1.push)
        push[i] = p / max(np.linalg.norm(p), 1e-9)
        weights[i] = lerp(k0.weights, k1.weights)
    return Frames(rot, angles, wrist, push, weights)


# -- penetration ---------------------------------------------------------------------------------


def _smooth_envelope(need: np.ndarray, half: int) -> np.ndarray:
    """A smooth curve >= need: the running maximum over +-half frames, averaged by a Hann window
    of the same support (each output averages maxima that all cover the centre frame)."""
    F = len(need)
    pad = np.pad(need, half)
    runmax = np.max(np.stack([pad[k:k + F] for k in range(2 * half + 1)]), axis=0)
    win = np.hanning(2 * half + 3)[1:-1]
    win /= win.sum()
    return np.convolve(np.pad(runmax, half, mode="edge"), win, mode="valid")


def resolve_penetration(verts: np.ndarray, frames: Frames, faces, fps: float,
                        max_passes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Push the hands apart along each frame's push direction where one is deeper than DEPTH_SOFT
    in the other. Returns the (F, 2, 3) wrist shifts and the last measured (F,) depths."""
    F = len(verts)
    dirs = frames.push[:, None] * np.stack([-frames.weights[:, 0], frames.weights[:, 1]], 1)[..., None]
    amount = np.zeros(F)
    depth = hand_contact(verts, faces, with_distance=False).depth
    half = max(2, int(round(0.2 * fps)))
    gain = np.ones(F)
    for _ in range(max_passes):
        bad = depth > DEPTH_SOFT
        if not bad.any():
            break
        need = np.where(bad, (depth - PRESS) * gain, 0.0)
        gain = np.where(bad, gain * 1.5, gain)  # the push may be oblique to the contact normal
        # a wide need is spread over more frames: the push moves at most ~4 mm a frame
        step = _smooth_envelope(need, max(half, int(np.ceil(need.max() / 0.004))))
        amount = amount + step
        redo = np.flatnonzero(step > 1e-7)
        shifted = verts[redo] + (amount[redo, None, None] * dirs[redo])[:, :, None]
        depth[redo] = hand_contact(shifted, faces, with_distance=False).depth
    return amount[:, None, None] * dirs, depth


# -- the families ----------------------------------------------------------------------------


def _shape(name: str, rng: np.random.Generator, jitter_deg: float = 4.0) -> np.ndarray:
    """A HANDSHAPES entry with a little per-joint variation, inside the limits."""
    lo, hi = pose_prior.limits_deg()
    a = HANDSHAPES[name] + rng.normal(0, jitter_deg * _DEG, (15, 3)) * np.array([0.3, 0.5, 1.0])
    return np.clip(a, (lo + 1e-3) * _DEG, (hi - 1e-3) * _DEG)


def _ready(script: Script, rng: np.random.Generator, shape: str = "relaxed") -> Key:
    """Hands apart in front of the subject, palms facing down and a little inwards."""
    rot = np.stack([
        hand_rotation(0, np.array([-0.1, -0.85, -0.5]), np.array([0.3, 0, -1.0])),
        hand_rotation(1, np.array([0.1, -0.85, -0.5]), np.array([-0.3, 0, -1.0])),
    ])
    rot = np.stack([_rot_about(rng.normal(size=3), rng.uniform(0, 8 * _DEG)) @ r for r in rot])
    wrist = np.array([[-0.12, -0.09, -0.02], [0.12, -0.09, -0.02]]) + rng.uniform(-0.015, 0.015, (2, 3))
    angles = np.stack([_shape(shape, rng), _shape(shape, rng)])
    key = Key(rot=rot, angles=angles, wrist=wrist, pivot=wrist.copy(), push=np.array([1.0, 0, 0]),
              weights=np.array([0.5, 0.5]))
    return _palm_pivots(script, key)


def _palm_pivots(script: Script, key: Key) -> Key:
    v, _ = script.posed(key)
    return replace(key, pivot=v[:, script.marks.ids["palm"]].copy())


def _contact_point(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.04), rng.uniform(-0.03, 0.05)])


def _target_rotation(hand: int, rng: np.random.Generator, palm: np.ndarray | None = None) -> np.ndarray:
    """A random plausible rotation for a hand that is touched (palm towards ``palm`` if given)."""
    side = -1.0 if hand == 0 else 1.0
    for _ in range(100):
        f = _unit(np.array([side * rng.uniform(0.0, 0.6), -rng.uniform(0.5, 1.0), -rng.uniform(-0.3, 0.8)]))
        if not forearm_ok(f, 0.1):
            continue
        n = palm if palm is not None else rng.normal(size=3)
        n = _unit(n - (n @ f) * f + 0.15 * rng.normal(size=3))
        return hand_rotation(hand, f, n)
    return hand_rotation(hand, np.array([side * 0.3, -0.8, -0.4]), np.array([-side, 0, 0.3]))


def _go(script: Script, pre: Key, contact: Key, speed: float | None = None) -> None:
    script.add(pre, speed=speed, avoid=True)
    script.add(contact, speed=speed)


def _release(script: Script, gap: float, speed: float | None = None) -> None:
    script.add(script.separated(script.last, gap), speed=speed)


def _feasible_touch(script: Script, make, tries: int = 6) -> Key | None:
    """Call ``make()`` (a ``Script.touch``) until it gives a key with plausible forearms."""
    for _ in range(tries):
        key = make()
        if not script.failed:
            return key
        script.failed = False
    return None


def _act_tip_on_palm(script: Script, rng: np.random.Generator) -> None:
    """A fingertip of one hand on the other's palm, heel or back, held (and maybe tapped)."""
    target = int(rng.integers(2))
    finger = rng.choice(["index", "index", "middle", "thumb"])
    shape = {"index": "point", "middle": "V", "thumb": "L"}[finger]
    mark_t = rng.choice(["palm", "palm", "back", "heel"])

    def make():
        rot_t = _target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.2])
        return script.touch(target, rot_t, _shape(rng.choice(["flat", "relaxed"]), rng), mark_t, _contact_point(rng),
                            _shape(shape, rng), f"tip_{finger}", fa, tilt=0.4, weights=_weights(target, rng))

    key = _feasible_touch(script, make)
    if key is None:
        return
    _go(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    script.hold(rng.uniform(0.2, 0.6))
    if rng.random() < 0.5:  # tap again
        _release(script, rng.uniform(0.01, 0.02), speed=0.15)
        script.add(key, speed=0.15)
        script.hold(rng.uniform(0.1, 0.3))
    _release(script, rng.uniform(0.04, 0.07))


def _weights(target: int, rng: np.random.Generator) -> tuple[float, float]:
    w_t = rng.uniform(0.1, 0.5)  # the touched hand moves less
    return (w_t, 1 - w_t) if target == 0 else (1 - w_t, w_t)


def _act_palms(script: Script, rng: np.random.Generator, shape: str = "flat", slide: int = 0,
               claps: int = 0) -> None:
    """Palms pressed together (optionally sliding, or clapping ``claps`` times)."""
    def make():
        rot_l, rot_r = _facing_pair(rng)
        return script.touch(0, rot_l, _shape(shape, rng), "palm", _contact_point(rng), _shape(shape, rng), "palm",
                            np.array([0.3, -0.8, -0.4]), weights=(0.5, 0.5), rot_a=rot_r)

    key = _feasible_touch(script, make)
    if key is None:
        return
    if claps:
        pre = script.separated(key, rng.uniform(0.07, 0.1))
        script.add(pre)
        for _ in range(claps):
            script.add(key, speed=0.42)
            script.hold(rng.uniform(0.05, 0.12))
            script.add(pre, speed=0.35)
        return
    _go(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    script.hold(rng.uniform(0.15, 0.4))
    if slide:
        along = _unit(key.rot[0] @ np.array([1.0, 0, 0]))  # along the left hand's fingers
        along = _unit(along - (along @ key.push) * key.push)
        for k in range(slide):
            d = rng.uniform(0.012, 0.025) * (1 if k % 2 == 0 else -1)
            moved = replace(key, wrist=key.wrist + np.array([[0.0], [1.0]]) * d * along,
                            pivot=key.pivot + np.array([[0.0], [1.0]]) * d * along)
            script.add(script.settle(moved), speed=0.15)
    _release(script, rng.uniform(0.04, 0.07))


def _facing_pair(rng: np.random.Generator, twist: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotations of two hands with the palms facing each other, mirror images of each other up to
    a small turn, forearms opening a little towards the elbows (the hand has no wrist joint)."""
    f_l = _unit(np.array([-rng.uniform(0.04, 0.15), -rng.uniform(0.6, 0.9), -rng.uniform(0.2, 0.7)]))
    rot_l = hand_rotation(0, f_l, _unit(np.array([1.0, 0.0, rng.uniform(-0.3, 0.3)])))
    mirror = np.diag([-1.0, 1.0, 1.0])
    rot_r = mirror @ rot_l @ mirror
    twist = np.deg2rad(rng.uniform(-10, 10)) if twist is None else twist
    palm_r = rot_r @ np.array([0, -1.0, 0])
    return rot_l, _rot_about(palm_r, twist) @ rot_r


def _close_until_touch(script: Script, key: Key, hand: int, shape: np.ndarray, steps: int = 5) -> Key:
    """Blend a hand's angles towards ``shape`` as far as it goes without pressing deeper than PRESS."""
    lo, hi = 0.0, 1.0
    best = key
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        angles = key.angles.copy()
        angles[hand] = (1 - mid) * key.angles[hand] + mid * shape
        trial = replace(key, angles=angles)
        v, _ = script.posed(trial)
        if script.overlap(v) <= PRESS + 5e-4:
            lo, best = mid, trial
        else:
            hi = mid
    return replace(best, contact=True)


def _grip_and_release(script: Script, rng: np.random.Generator, make, closers: tuple[int, ...],
                      hold_s: tuple[float, float]) -> None:
    """Approach a feasible touch, close the ``closers`` hands' fingers around the other until they
    touch, hold for a while, open again and separate."""
    key = _feasible_touch(script, make)
    if key is None:
        return
    _go(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    grip = key
    for hand in closers:
        grip = _close_until_touch(script, grip, hand, _shape("grip", rng))
    script.add(grip, speed=0.2)
    script.hold(rng.uniform(*hold_s))
    script.add(replace(key, contact=True), speed=0.2)
    _release(script, rng.uniform(0.04, 0.07))


def _act_clasp(script: Script, rng: np.random.Generator) -> None:
    """Handshake-like: palms together crosswise, then the fingers close around the other hand."""
    def make():
        f_l = _unit(np.array([-rng.uniform(0.05, 0.3), -rng.uniform(0.4, 0.7), -rng.uniform(0.6, 0.9)]))
        rot_l = hand_rotation(0, f_l, _unit(np.array([1.0, 0.0, rng.uniform(-0.2, 0.2)])))
        return script.touch(0, rot_l, _shape("relaxed", rng), "palm", _contact_point(rng), _shape("relaxed", rng),
                            "palm", np.array([0.4, -0.7, 0.35]), tilt=0.1, weights=(0.5, 0.5))

    _grip_and_release(script, rng, make, (1, 0), (0.3, 0.7))


def _act_grasp_fingers(script: Script, rng: np.random.Generator) -> None:
    """One hand closes around the other's fingers."""
    target = int(rng.integers(2))

    def make():
        rot_t = _target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.3])
        return script.touch(target, rot_t, _shape("flat", rng), rng.choice(["pad_middle", "pad_index"]),
                            _contact_point(rng), _shape("C", rng), "palm", fa, tilt=0.2,
                            weights=_weights(target, rng))

    _grip_and_release(script, rng, make, (1 - target,), (0.2, 0.6))


def _act_interlock(script: Script, rng: np.random.Generator) -> None:
    """Palms facing, fingers spread and offset so they interlace, then curl over the other's."""
    def make():
        rot_l, rot_r = _facing_pair(rng, twist=np.deg2rad(rng.uniform(-6, 6)))
        across = rot_l @ np.array([0.0, 0.0, 1.0]) * rng.choice([-1, 1]) * rng.uniform(0.007, 0.011)
        return script.touch(0, rot_l, _shape("spread", rng), "palm", _contact_point(rng), _shape("spread", rng),
                            "palm", np.array([0.3, -0.8, -0.4]), weights=(0.5, 0.5), rot_a=rot_r, offset=across)

    _grip_and_release(script, rng, make, (1, 0), (0.2, 0.5))


def _act_palm_on_back(script: Script, rng: np.random.Generator) -> None:
    """One palm laid on the back of the other hand (flat, relaxed or a fist)."""
    target = int(rng.integers(2))

    def make():
        rot_t = _target_rotation(target, rng, palm=np.array([0.0, 0.0, -1.0]))
        fa = np.array([0.4 if target == 0 else -0.4, -0.8, -0.2])
        return script.touch(target, rot_t, _shape(rng.choice(["flat", "relaxed", "fist"]), rng), "back",
                            _contact_point(rng), _shape(rng.choice(["flat", "relaxed"]), rng), "palm", fa,
                            tilt=0.2, weights=_weights(target, rng))

    key = _feasible_touch(script, make)
    if key is None:
        return
    _go(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    script.hold(rng.uniform(0.3, 0.8))
    _release(script, rng.uniform(0.04, 0.07))


def _run(script: Script, rng: np.random.Generator, until: float, acts: list, repeat: bool = True) -> None:
    """Append randomly drawn actions until the script lasts ``until`` seconds."""
    last = -1
    while script.duration < until:
        k = int(rng.integers(len(acts)))
        if k == last and not repeat:
            continue
        before = script.checkpoint()
        acts[k](script, rng)
        if script.checkpoint() == before or not script.plausible_since(before):
            script.rollback(before)  # no plausible placement or path found: wait a moment
            script.hold(0.3)
        last = k


def _act_press(script: Script, rng: np.random.Generator) -> None:
    _act_palms(script, rng, str(rng.choice(["flat", "relaxed"])))


def _random_interaction(script: Script, rng: np.random.Generator, until: float) -> None:
    _run(script, rng, until, [_act_tip_on_palm, _act_press, _act_interlock, _act_grasp_fingers, _act_palm_on_back])


def _act_point(script: Script, rng: np.random.Generator) -> None:
    """The right index points at the left palm and touches it, tapping 0-2 times."""
    palm = [np.array([0.3, 0.0, 1.0]), np.array([1.0, 0.0, 0.2]), np.array([0.3, -1.0, 0.3])][int(rng.integers(3))]

    def make():
        rot_l = _target_rotation(0, rng, palm=palm)
        return script.touch(0, rot_l, _shape(rng.choice(["flat", "relaxed"]), rng), "palm", _contact_point(rng),
                            _shape("point", rng), "tip_index", np.array([0.5, -0.8, -0.2]), tilt=0.45,
                            weights=(0.2, 0.8))

    key = _feasible_touch(script, make)
    if key is None:
        return
    _go(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    for _ in range(int(rng.integers(0, 3))):  # taps
        script.hold(rng.uniform(0.1, 0.2))
        _release(script, rng.uniform(0.01, 0.02), speed=0.15)
        script.add(key, speed=0.15)
    script.hold(rng.uniform(0.2, 0.5))
    _release(script, rng.uniform(0.04, 0.07))


def _act_count(script: Script, rng: np.random.Generator) -> None:
    """The right index touches the pads of the left's spread fingers one after another."""
    f_l = _unit(np.array([-rng.uniform(0.1, 0.35), -rng.uniform(0.35, 0.55), -rng.uniform(0.75, 0.95)]))
    rot_l = hand_rotation(0, f_l, _unit(np.array([rng.uniform(0.2, 0.6), -1.0, 0.0])))
    shape_l = _shape("spread", rng)
    at = _contact_point(rng)
    wrist_l = None
    fingers = ["thumb", "index", "middle", "ring", "pinky"][: int(rng.integers(3, 6))]
    if rng.random() < 0.5:
        fingers = fingers[::-1]
    for k, finger in enumerate(fingers):
        if wrist_l is None:
            point = at
        else:  # the left hand stays where it is
            vl, _ = script.local(np.stack([rot_l, np.eye(3)]), np.stack([shape_l, shape_l]))
            point = wrist_l + vl[0, script.marks.ids[f"pad_{finger}"]]
        key = script.touch(0, rot_l, shape_l, f"pad_{finger}", point, _shape("point", rng), "tip_index",
                           np.array([0.5, -0.8, -0.1]), tilt=0.3, weights=(0.1, 0.9), margin=0.0)
        if script.failed:
            script.failed = False
            continue
        wrist_l = key.wrist[0]
        _go(script, script.separated(key, rng.uniform(0.015, 0.03) if k else rng.uniform(0.04, 0.07)), key)
        script.hold(rng.uniform(0.1, 0.3))
    if script.last.contact:
        _release(script, rng.uniform(0.04, 0.07))


def _act_clap(script: Script, rng: np.random.Generator) -> None:
    _act_palms(script, rng, "flat", claps=int(rng.integers(2, 4)))


def _act_rub(script: Script, rng: np.random.Generator) -> None:
    _act_palms(script, rng, "relaxed", slide=int(rng.integers(2, 5)))


def _communication(script: Script, rng: np.random.Generator, until: float) -> None:
    _run(script, rng, until, [_act_clap, _act_clasp, _act_point, _act_count, _act_rub], repeat=False)


def _turn_about_contact(script: Script, rng: np.random.Generator, key: Key) -> None:
    """Turn both hands together about the contact point, if some turn keeps the forearms plausible."""
    about = key.pivot[0]
    for _ in range(12):
        axis = _unit(rng.normal(size=3) + np.array([0, 1.5, 0]) * rng.choice([-1, 1]))
        angle = rng.uniform(25, 70) * _DEG * rng.choice([-1, 1])
        turned = script.contain(script.turn_pair(key, axis, angle, about))
        steps = [script.turn_pair(key, axis, a, about) for a in np.linspace(0, angle, 5)[1:]]
        if all(script.feasible(k, margin=0.03) for k in steps + [turned]):
            script.add(replace(turned, contact=True), speed=0.18)
            script.hold(rng.uniform(0.1, 0.3))
            return


def _act_tut(script: Script, rng: np.random.Generator) -> None:
    """One tutting move: angular shapes touch (tip to tip, fingers square on a palm, L to L),
    turn together about the contact once or twice, and part."""
    kind = int(rng.integers(3))
    if kind == 0:  # fingertip to fingertip
        f_t = ("index", "middle", "thumb")[int(rng.integers(3))]
        f_a = ("index", "middle", "thumb")[int(rng.integers(3))]
        shapes = {"index": "point", "middle": "V", "thumb": "L"}
        shape_t, shape_a, mark_t, mark_a = shapes[f_t], shapes[f_a], f"tip_{f_t}", f"tip_{f_a}"
    elif kind == 1:  # fingers at a right angle on the other palm
        shape_t, shape_a, mark_t, mark_a = "flat", "table", "palm", "pad_middle"
    else:  # L against L: index tip to thumb tip
        shape_t, shape_a, mark_t, mark_a = "L", "L", "tip_thumb", "tip_index"
    target = int(rng.integers(2))

    def make():
        rot_t = _target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.2])
        return script.touch(target, rot_t, _shape(shape_t, rng, 2), mark_t, _contact_point(rng),
                            _shape(shape_a, rng, 2), mark_a, fa, tilt=0.5, weights=(0.5, 0.5))

    key = _feasible_touch(script, make)
    if key is None:
        return
    _go(script, script.separated(key, rng.uniform(0.03, 0.05)), key)
    script.hold(rng.uniform(0.1, 0.25))
    for _ in range(int(rng.integers(1, 3))):
        _turn_about_contact(script, rng, script.last)
    _release(script, rng.uniform(0.03, 0.05))


def _tutting(script: Script, rng: np.random.Generator, until: float) -> None:
    _run(script, rng, until, [_act_tut])


_SIGN_MARKS = {  # dominant handshape -> the landmarks it touches with
    "point": ["tip_index"], "V": ["tip_index", "tip_middle"], "flat": ["pad_middle", "palm", "edge"],
    "fist": ["knuckles", "edge"], "O": ["tip_thumb"], "C": ["pad_thumb", "tip_index"], "L": ["tip_index", "tip_thumb"],
    "relaxed": ["pad_index", "palm"],
}


def _act_sign_phrase(script: Script, rng: np.random.Generator) -> None:
    """The base (left) hand holds a handshape palm up, palm right or palm towards the subject; the
    dominant hand touches it with 2-4 handshapes, each at a target landmark."""
    base_shape = _shape(["flat", "flat", "fist", "C", "spread"][int(rng.integers(5))], rng, 2)
    palm = [np.array([0.2, 0, 1.0]), np.array([1.0, 0, 0.2]), np.array([0.3, -1.0, 0.3])][int(rng.integers(3))]
    rot_l = _target_rotation(0, rng, palm=palm)
    targets = ["palm", "back", "heel", "pad_index", "tip_index", "tip_middle", "side_index"]
    wrist_l = None
    for _ in range(int(rng.integers(2, 5))):
        shape = list(_SIGN_MARKS)[int(rng.integers(len(_SIGN_MARKS)))]
        mark_a = _SIGN_MARKS[shape][int(rng.integers(len(_SIGN_MARKS[shape])))]
        mark_t = targets[int(rng.integers(len(targets)))]
        if wrist_l is None:
            at = _contact_point(rng) + np.array([-0.02, 0, 0])
        else:  # the base hand stays where it is
            vl, _ = script.local(np.stack([rot_l, np.eye(3)]), np.stack([base_shape, base_shape]))
            at = wrist_l + vl[0, script.marks.ids[mark_t]]
        key = script.touch(0, rot_l, base_shape, mark_t, at, _shape(shape, rng, 3), mark_a,
                           np.array([0.5, -0.8, -0.2]), tilt=0.35, weights=(0.1, 0.9), margin=0.0)
        if script.failed:
            script.failed = False
            continue
        wrist_l = key.wrist[0]
        gap = rng.uniform(0.02, 0.04) if script.last.contact else rng.uniform(0.04, 0.07)
        if script.last.contact:
            _release(script, gap, speed=0.25)
        _go(script, script.separated(key, gap), key, speed=rng.uniform(0.2, 0.3))
        script.hold(rng.uniform(0.15, 0.4))
    if script.last.contact:
        _release(script, rng.uniform(0.04, 0.07))


def _sign(script: Script, rng: np.random.Generator, until: float) -> None:
    _run(script, rng, until, [_act_sign_phrase])


_FAMILY_SCRIPTS = {"random_interaction": _random_interaction, "communication": _communication,
                   "tutting": _tutting, "sign": _sign}


# -- the sequence ------------------------------------------------------------------------------


def _continuous_rotvec(rv: np.ndarray) -> np.ndarray:
    """(F, 3) axis-angles of a smooth rotation -> the same rotations without the jumps between
    angles pi and -pi (theta - 2 pi about the same axis where that is the nearer neighbour)."""
    out = rv.copy()
    for i in range(1, len(out)):
        theta = np.linalg.norm(out[i])
        if theta > 1e-8:
            alt = out[i] * (1 - 2 * np.pi / theta)
            if np.linalg.norm(alt - out[i - 1]) < np.linalg.norm(out[i] - out[i - 1]):
                out[i] = alt
    return out


@contextlib.contextmanager
def _torch_threads(n: int):
    """The hand model runs on batches of a few frames here, where intra-op threads only add
    synchronisation (tens of ms a call on a busy machine): use ``n`` threads, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pose_motion(motion: HandMotion, model: HandModel) -> tuple[np.ndarray, np.ndarray]:
    """(F, 2, V, 3) vertices and (F, 2, 21, 3) joints (data_schemas.keypoints order) of a motion, m."""
    with _torch_threads(1), torch.no_grad():
        out = model(*(torch.as_tensor(a) for a in (motion.global_orient, motion.hand_pose, motion.betas,
                                                   motion.transl)))
    return out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)


def make_motion(family: str, n_frames: int, fps: float, seed: int, model: HandModel) -> HandMotion:
    """A seeded, smooth two-hand interaction sequence of ``family`` (one of FAMILIES)."""
    with _torch_threads(1):
        return _make_motion(family, n_frames, fps, seed, model)


def _make_motion(family: str, n_frames: int, fps: float, seed: int, model: HandModel) -> HandMotion:
    if family not in FAMILIES:
        raise ValueError(f"unknown motion family {family!r}; expected one of {', '.join(FAMILIES)}")
    if n_frames < 2 or fps <= 0:
        raise ValueError(f"need n_frames >= 2 and fps > 0, got {n_frames} and {fps}")
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    betas = np.clip(rng.normal(0, 0.8, 10), -2, 2)
    script = Script(model, np.stack([betas, betas]), rng)
    # 1. keyframes
    script.add(_ready(script, rng, str(rng.choice(["relaxed", "flat"]))))
    until = (n_frames - 1) / fps
    _FAMILY_SCRIPTS[family](script, rng, until)
    # 2. frames
    frames = sample(script.keys, script.times, n_frames, fps)
    verts, _ = script.forward(frames.rot, frames.angles, frames.wrist)
    # 3. no deep interpenetration
    shift, _ = resolve_penetration(verts, frames, model.faces, fps)
    pose = pose_prior.to_axis_angle(frames.angles, model.frames)  # (F, 2, 45)
    pose[:, 0] *= AXIS_ANGLE_MIRROR
    go = Rotation.from_matrix(frames.rot.reshape(-1, 3, 3)).as_rotvec().reshape(n_frames, 2, 3)
    go = np.stack([_continuous_rotvec(go[:, h]) for h in range(2)], axis=1)
    transl = frames.wrist + shift - script.rest_wrist
    return HandMotion(category=family, fps=float(fps), global_orient=go.astype(np.float32),
                      hand_pose=pose.astype(np.float32), betas=np.stack([betas, betas]).astype(np.float32),
                      transl=transl.astype(np.float32))
