"""A posed studio sequence: every mesh vertex and joint of both hands in the world, per frame,
and what each camera sees of the joints.

World frame: metres, z up, origin at the centre of the capture volume. Each hand's
root (wrist) rotation is ``global_orient``; its forearm is rigid with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from capture.studio.render import OBJECT_LEFT, OBJECT_LEFT_ARM, OBJECT_RIGHT, OBJECT_RIGHT_ARM, Look, \
    SceneTemplate, View, draw_look, key_light_visibility, pose_arms, scene_template, \
    vertex_normals
from data_schemas.calibration import Camera

JOINT_DEPTH_TOLERANCE = 0.015  # m: a joint lies this far under the skin at most
PALM_NORMAL = np.array([0.0, -1.0, 0.0])  # both hands' palms face -y in their model frames
OTHER = {0: (OBJECT_RIGHT, OBJECT_RIGHT_ARM), 1: (OBJECT_LEFT, OBJECT_LEFT_ARM)}


class HandParameters(Protocol):
    """Both hands' hand-model parameters, per frame (``capture.studio.motion.HandMotion``)."""

    global_orient: np.ndarray  # (F, 2, 3)
    hand_pose: np.ndarray  # (F, 2, 45)
    betas: np.ndarray  # (2, 10)
    transl: np.ndarray  # (F, 2, 3)


@dataclass
class PosedScene:
    vertices: np.ndarray  # (F, N, 3) float32 world: left hand, right hand, left arm, right arm
    joints: np.ndarray  # (F, 2, 21, 3) float64 world, our keypoint order
    palm_normal: np.ndarray  # (F, 2, 3) unit, world
    lit: np.ndarray  # (F, N) float32 key-light visibility of every vertex (shadows)
    normals: np.ndarray  # (F, N, 3) float32 unit vertex normals
    template: SceneTemplate
    look: Look


def pose_scene(model, motion: HandParameters, rng: np.random.Generator, batch: int = 256) -> PosedScene:
    """Run the hand model over the motion and attach forearms; one look drawn from ``rng``."""
    F = motion.global_orient.shape[0]
    betas = torch.as_tensor(np.asarray(motion.betas), dtype=torch.float32)
    verts, joints = [], []
    with torch.no_grad():
        for s in range(0, F, batch):
            sl = slice(s, s + batch)
            out = model(torch.as_tensor(motion.global_orient[sl], dtype=torch.float32),
                        torch.as_tensor(motion.hand_pose[sl], dtype=torch.float32), betas,
                        torch.as_tensor(motion.transl[sl], dtype=torch.float32))
            verts.append(out.vertices.numpy())
            joints.append(out.joints.numpy())
        z = torch.zeros(1, 2, 3)
        rest = model(z, torch.zeros(1, 2, 45), None, z).vertices[0].numpy()  # (2, V, 3) mean shape
        wrist_rest = model.rest_joints(betas)[:, 0].numpy()  # (2, 3)
    verts = np.concatenate(verts)  # (F, 2, V, 3)
    joints = np.concatenate(joints).astype(np.float64)
    look = draw_look(rng)
    template = scene_template(model.faces, rest, model.tip_ids.numpy(), look, rng)
    rot = Rotation.from_rotvec(np.asarray(motion.global_orient, np.float64).reshape(-1, 3)).as_matrix()
    rot = rot.reshape(F, 2, 3, 3)
    arms = np.stack([pose_arms(template, rot[f], joints[f, :, 0], wrist_rest) for f in range(F)])  # (F, 2, A, 3)
    allv = np.concatenate([verts[:, 0], verts[:, 1], arms[:, 0], arms[:, 1]], axis=1).astype(np.float32)
    lit = np.stack([key_light_visibility(v.astype(np.float64), template.faces, look.key_dir) for v in allv])
    normals = np.stack([vertex_normals(v.astype(np.float64), template.faces) for v in allv]).astype(np.float32)
    return PosedScene(allv, joints, rot @ PALM_NORMAL, lit, normals, template, look)


@dataclass
class ViewTruth:
    pixels: np.ndarray  # (2, 21, 2) projected joints, px (distorted)
    visible: np.ndarray  # (2, 21) bool: in the image and not hidden behind any surface
    in_image: np.ndarray  # (2, 21) bool
    unoccluded: np.ndarray  # (2,) bool: whole hand in the image, no joint behind the other hand or arm
    facing_deg: np.ndarray  # (2,) angle between the palm-or-back normal and the direction to the camera


def view_truth(camera: Camera, joints: np.ndarray, palm_normal: np.ndarray, view: View) -> ViewTruth:
    """Ground truth of one frame in one camera; joints (2, 21, 3), palm_normal (2, 3)."""
    W, H = camera.size
    px = camera.project(joints)  # (2, 21, 2)
    z = camera.to_camera(joints)[..., 2]
    col, row = np.rint(px[..., 0]).astype(int), np.rint(px[..., 1]).astype(int)
    in_image = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    c, r = np.clip(col, 0, W - 1), np.clip(row, 0, H - 1)
    surface = view.depth[r, c]  # (2, 21)
    hidden = surface < z - JOINT_DEPTH_TOLERANCE
    visible = in_image & ~hidden
    objects = view.objects[r, c]
    unoccluded = np.zeros(2, bool)
    for h in range(2):
        by_other = hidden[h] & np.isin(objects[h], OTHER[h])
        unoccluded[h] = in_image[h].all() and not by_other.any()
    to_cam = camera.center - joints[:, 0]
    to_cam /= np.linalg.norm(to_cam, axis=1, keepdims=True)
    facing = np.degrees(np.arccos(np.clip(np.abs((palm_normal * to_cam).sum(1)), 0, 1)))
    return ViewTruth(px, visible, in_image, unoccluded, facing)
