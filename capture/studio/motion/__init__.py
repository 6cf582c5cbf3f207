"""Procedural two-hand interaction motion for the synthetic capture studio.

    motion = make_motion("communication", n_frames=300, fps=30.0, seed=3, model=HandModel())
    motion.global_orient  # (F, 2, 3) world axis-angle     motion.hand_pose  # (F, 2, 45)
    motion.transl         # (F, 2, 3) m                     motion.betas      # (2, 10)
    vertices, joints = pose_motion(motion, model)          # (F, 2, V, 3), (F, 2, 21, 3)

World frame as the studio's (``capture.studio.rig``): metres, z up, origin at the centre
of the capture volume. The subject sits on the -y side: each forearm leaves its wrist
towards -y and downwards, along the hand model's forearm axis (+x for the right hand, -x
for the mirrored left; ``forearm.FOREARM_AXIS``), as the renderer draws it.

The paper's four categories (``FAMILIES``):

* ``random_interaction``: hands approach, touch and release in random ways: a fingertip on
  the other palm or back, palms pressed, fingers interlaced, one hand grasping the other's
  fingers, a palm on the other's back.
* ``communication``: clapping (now and then ending palms together), a handshake-like clasp
  that shakes, pointing at the other palm and drawing on it, counting on the other hand's
  fingers, rubbing the palms.
* ``tutting``: angular finger shapes (L, table, flat, point) touching fingertip to
  fingertip or fingertips to palm at right angles, both hands then turning together about
  the contact.
* ``sign``: the non-dominant (left) hand holds a base handshape; the dominant hand runs
  through handshapes of ``handshapes.HANDSHAPES`` and touches targets on it (palm, back,
  fingertips), holding, tapping again, brushing along it or moving on with it.

The studio performs at the paper's interaction level (``bench/studio_interaction.py``, by the
dataset statistics' rule ``hand_model.contact_frames``): over three 10-second takes of each
family, at least half the frames are in contact and the mean shortest joint distance is under
3.8 cm (paper: 57.3%, 3.61 cm), and no frame has one hand more than 2 mm inside the other. Contacts are held, not grazed: while
touching, the pair turns and drifts together about the contact (``moves.dwell``), one hand strokes
along the other (``moves.slide``), a clasp shakes (``moves.shake``), tutting turns about the
contact, signs tap again or brush.

How a sequence is made:

1. A family's choreography appends keyframes (``sampling.Key``) to the script (``script``):
   each hand's rotation, anatomical joint angles (``hand_model.pose_prior``) and wrist
   position. A contact keyframe is placed by ``Script.touch``: the active hand's landmark (a
   fingertip, the palm centre...) faces the target's landmark, then the hands are slid apart
   or together along the contact normal until the exact overlap (``hand_model.contact``) is
   ``penetration.PRESS`` (1.2 mm). Hands approach to and leave from ``moves.APPROACH_GAP``
   (2.5-4.5 cm) along the contact normal.
   Each keyframe's duration follows from the longest joint path to it (0.25-2 s, mean joint
   speed 0.2-0.32 m/s into, out of and along a contact, 0.28-0.4 m/s between contacts). A
   transition that would pass one hand through the other goes round it (a key half-way with
   the hands drawn apart as little as clears the way); an action whose frames would turn a
   forearm out of its plausible range or cross the arms is taken back and another drawn.
   The take starts 0.3-0.6 s before the first touch (a recording of a subject already at
   work, not posing at rest); the choreography runs on to the take's end.
2. Frames are sampled between keyframes with a minimum-jerk profile (zero velocity and
   acceleration at each keyframe): rotations slerped about a pivot (the contact point or
   the palm), joint angles and pivots blended linearly in the profile. Angles inside the
   joint limits at the keys stay inside (the limits are a box in the angles). Keys that move
   both hands by one rigid motion about a shared pivot (``Script.turn_pair``) give frames
   that move them as one body, so a held contact stays exact in between.
3. Frames where one hand is more than ``penetration.DEPTH_SOFT`` (1.8 mm) inside the other are
   pushed apart along the contact normal; the push is the running maximum of the need smoothed
   by a window of the same width, so it is at least the need and smooth in time; repeated until
   every frame is below ``DEPTH_SOFT``.

Modules, one concern each: ``handshapes`` (the handshape library), ``forearm`` (hand rotations
from forearm and palm, plausible forearms), ``rotations`` (small helpers), ``script`` (the keyframe
script: landmarks, contact placement, transactions), ``sampling`` (keyframes into frames),
``penetration`` (the push apart), ``moves`` (what the choreographies share), and one module per
family, each with its ``choreograph(script, rng, until)``: ``random_interaction``,
``communication``, ``tutting``, ``sign``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from capture.studio.motion import communication, random_interaction, sign, tutting
from capture.studio.motion.moves import ready
from capture.studio.motion.penetration import resolve_penetration
from capture.studio.motion.sampling import sample
from capture.studio.motion.script import Script
from hand_model import pose_prior
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel

FAMILIES = ("random_interaction", "communication", "tutting", "sign")  # the paper's four categories


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


CHOREOGRAPHIES = {"random_interaction": random_interaction.choreograph, "communication": communication.choreograph,
                  "tutting": tutting.choreograph, "sign": sign.choreograph}


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


def _take_start(script: Script, rng: np.random.Generator) -> float:
    """When the take starts (s into the script): a moment before the hands first touch, as a
    recording does that begins with the subject already performing, not posing at rest."""
    first = next((t for k, t in zip(script.keys, script.times) if k.contact), 0.0)
    return max(0.0, first - rng.uniform(0.3, 0.6))


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
    script.add(ready(script, rng, str(rng.choice(["relaxed", "flat"]))))
    until = (n_frames - 1) / fps
    CHOREOGRAPHIES[family](script, rng, until)
    start = _take_start(script, rng)
    CHOREOGRAPHIES[family](script, rng, start + until)
    # 2. frames
    frames = sample(script.keys, list(np.asarray(script.times) - start), n_frames, fps)
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
