"""The keyframe script (step 1 of ``capture.studio.motion``): a growing string of keyframes and
their times, placed with the hand model.

A contact keyframe is placed by ``Script.touch``: the active hand's landmark (``Landmarks``: a
fingertip, the palm centre...) faces the target's landmark, then the hands are slid apart or
together along the contact normal until the exact overlap (``hand_model.contact``) is ``PRESS``.
Each keyframe's duration follows from the longest joint path to it (0.25-2 s, mean joint speed
0.2-0.32 m/s into, out of and along a contact, 0.28-0.4 m/s between contacts). A transition that
would pass one hand through the other goes round it (a key half-way with the hands drawn apart as
little as clears the way); an action whose frames would turn a forearm out of its
plausible range or cross the arms is taken back (``checkpoint`` / ``rollback``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from capture.studio.motion.forearm import (BACK, ELBOWS_APART, FOREARM_AXIS, FOREARM_MAX_UP, FOREARM_MIN_BACK,
                                           FOREARM_MIN_GAP, elbows_apart, forearm_gap, forearm_ok)
from capture.studio.motion.penetration import DEPTH_SOFT, PRESS
from capture.studio.motion.rotations import align, random_direction_near, rot_about, unit
from capture.studio.motion.sampling import Key, sample
from capture.studio.render import vertex_normals
from hand_model import pose_prior
from hand_model.contact import hand_contact
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel

VOLUME_HALF = 0.2  # m, keyframes keep every vertex inside this cube about the origin (frames: 0.25)


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
            ids[f"pad_{finger}"] = nearest(0.5 * (j[dip] + j[tip]), unit(facing), 0.5)
        rings = {k: np.flatnonzero(np.linalg.norm(v - v[i], axis=1) < 0.008) for k, i in ids.items()}
        return Landmarks(ids, rings)


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
        return unit(n[self.marks.rings[mark]].mean(0))

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
        if self.keys and avoid and self.collides(self.last, key):
            self._add_via(key, speed)
        if self.keys and duration is None:
            _, j = self.between(self.last, key)
            path = float(np.linalg.norm(np.diff(j, axis=0), axis=-1).sum(0).max())
            free = not (self.last.contact or key.contact)  # moving between contacts: brisker
            speed = speed or (self.rng.uniform(0.28, 0.4) if free else self.rng.uniform(0.2, 0.32))
            duration = float(np.clip(path / speed, 0.25, 2.0))
        self.times.append(self.duration + (duration or 0.0) if self.keys else 0.0)
        self.keys.append(key)
        return key

    def collides(self, k0: Key, k1: Key, n: int = 9) -> bool:
        """Would one hand pass more than DEPTH_SOFT into the other on the way from k0 to k1?"""
        v, _ = self.between(k0, k1, n)
        return bool(hand_contact(v[1:-1], self.model.faces, with_distance=False).depth.max() > DEPTH_SOFT)

    def _add_via(self, key: Key, speed: float | None) -> None:
        """The go-round key: half-way, the hands drawn apart (each by its share of the keys' weights)
        along the line between them or either key's push direction, as little as clears the way."""
        mid = sample([self.last, key], [0.0, 1.0], 3, 2)  # t = 0, 0.5, 1
        v, _ = self.forward(mid.rot, mid.angles, mid.wrist)
        d = v[1, 1].mean(0) - v[1, 0].mean(0)  # from the left hand towards the right, half-way
        d = unit(d) if np.linalg.norm(d) > 1e-3 else np.array([1.0, 0, 0])
        share = 2 * np.array([[-mid.weights[1, 0]], [mid.weights[1, 1]]])  # (2, 1)
        for apart in (0.02, 0.035, 0.05, 0.07, 0.1, 0.14):
            for away in (d, self.last.push, key.push):
                shift = apart * share * away
                via = self.contain(Key(rot=mid.rot[1], angles=mid.angles[1], wrist=mid.wrist[1] + shift,
                                       pivot=0.5 * (self.last.pivot + key.pivot) + shift, push=away,
                                       weights=mid.weights[1]))
                if not self.collides(self.last, via, 6) and not self.collides(via, key, 6):
                    self.add(via, speed=speed)
                    return
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
            want = random_direction_near(-n_t, tilt, self.rng) if tilt > 0 else -n_t
            R0 = align(n_a, want)
            f_t = rot_t @ FOREARM_AXIS[target]
            wrist_t = at - vl[target, self.marks.ids[mark_t]]
            best = -np.inf
            for psi in np.linspace(0, 2 * np.pi, 36, endpoint=False):
                R = rot_about(want, psi) @ R0
                f = R @ FOREARM_AXIS[active]
                fa, wr = np.zeros((2, 3)), np.zeros((2, 3))
                fa[target], fa[active] = f_t, f
                wr[target], wr[active] = wrist_t, at_a - R @ vl[active, self.marks.ids[mark_a]]
                score = f @ unit(forearm_a) - 20 * (
                    max(0.0, FOREARM_MIN_BACK + 0.1 - f @ BACK) + max(0.0, f[2] - FOREARM_MAX_UP + 0.1)
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

    def turn_pair(self, key: Key, axis: np.ndarray, angle: float, about: np.ndarray,
                  shift: np.ndarray | None = None) -> Key:
        """Both hands turned rigidly by ``angle`` about ``axis`` through ``about``, then moved by
        ``shift``: contacts kept. Sampled from a key pivoting about the same point of the pair, the
        frames between move the pair as one body too (the same rotation left-multiplies both hands)."""
        Q = rot_about(axis, angle)
        shift = np.zeros(3) if shift is None else shift
        return replace(key, rot=Q @ key.rot, wrist=about + shift + (key.wrist - about) @ Q.T,
                       pivot=np.stack([about + shift, about + shift]), push=Q @ key.push)
