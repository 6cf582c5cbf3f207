"""The hand model's 21 joints per hand without its whole surface: the fast forward pass for fitting.

``HandModel.forward`` skins every vertex (1801 for the open hand model, 778 for MANO)
to return 5 fingertips; fitting needs the joints thousands of times, so this layer
evaluates MANO's linear blend skinning (smplx ``lbs``) on the 16 joints and on chosen
vertices only (the 5 tips; optionally a spread-out subset of the surface with its
normals, for the interpenetration term; or a detector's landmarks, each a fixed combination of
vertices, ``data_schemas.landmarks``), both hands in one batch:

1. shape: v_shaped = v_template + shapedirs . betas (chosen vertices); J = J_regressor . v_shaped
   (the regressor applied to the full shaped template, folded into a (16, 3, 10) map)
2. pose: R_k = rodrigues(theta_k) (``data_schemas.camera_model``'s torch form); chosen vertices get
   the pose correctives posedirs . (R - I)
3. kinematic chain, level by level: G_k = G_parent(k) [R_k | J_k - J_parent(k)]; posed joints =
   G_k's translation
4. vertices: sum_k w_k (G_k with the rest joint removed) applied to the corrected vertices;
   normals: the rest normals turned by sum_k w_k rot(G_k), renormalised
5. + transl, MANO-21 order -> ours
6. landmarks: L_l = sum_v c_lv x_v over the definition's vertices (the detector's points; without a
   definition, the joints themselves); for Jacobians, each landmark's lever about joint k,
   sum_{m in sub(k)} Q_lm - S_lk p_k, with Q_lm = sum_v c_lv w_vm (G_m x_v) the part of L_l that
   joint m carries and S_lk = sum_{m in sub(k)} sum_v c_lv w_vm: turning joint k by a small world
   rotation a moves L_l by a x lever (exact but for the pose correctives)

Equal to ``HandModel.forward`` (joints and the chosen vertices) to float precision (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from data_schemas.camera_model import rodrigues_to_matrix_torch
from data_schemas.keypoints import MANO_PARENTS, OURS_OF_MANO21
from data_schemas.landmarks import LandmarkDefinition
from hand_model.model import HandModel


def rest_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3), (T, 3) -> (V, 3) unit area-weighted vertex normals."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    out = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


class JointsLayer(torch.nn.Module):
    """``JointsLayer(HandModel())(global_orient, hand_pose, betas, transl)`` -> (B, 2, 21, 3) joints.

    ``surface_points=K`` also keeps K surface vertices per hand (every (V // K)-th), posed by
    ``surface(...)`` with their normals. ``landmarks``: a detector's landmark definition (checked
    against the model by ``hand_model.landmarks.check_definition``), posed by ``landmarks(...)``."""

    def __init__(self, model: HandModel, surface_points: int = 0, landmarks: LandmarkDefinition | None = None):
        super().__init__()
        layers = (model.left, model.right)
        V = int(layers[0].v_template.shape[0])
        tips = model.tip_ids.cpu().numpy()
        sets = {"t": (tips, tips)}
        if surface_points:
            every = np.arange(0, V, max(1, V // surface_points))[:surface_points]
            sets["s"] = (every, every)
        if landmarks is not None:
            sets["l"] = tuple(landmarks.vertex_ids[h].reshape(-1) for h in range(2))  # (21 K,) per hand
        # 1. rest joints and chosen vertices as affine functions of betas, per hand
        buffers: dict[str, list[torch.Tensor]] = {}
        for h, layer in enumerate(layers):
            Jr = layer.J_regressor  # (16, V)
            buffers.setdefault("j_template", []).append(Jr @ layer.v_template)  # (16, 3)
            buffers.setdefault("j_dirs", []).append(torch.einsum("jv,vcb->jcb", Jr, layer.shapedirs))  # (16, 3, 10)
            buffers.setdefault("pose_mean", []).append(layer.pose_mean[3:])  # (45,) zero for flat_hand_mean
            for key, ids in sets.items():
                idx = torch.as_tensor(ids[h])
                buffers.setdefault(f"{key}_template", []).append(layer.v_template[idx])  # (n, 3)
                buffers.setdefault(f"{key}_dirs", []).append(layer.shapedirs[idx])  # (n, 3, 10)
                buffers.setdefault(f"{key}_posedirs", []).append(layer.posedirs.reshape(-1, V, 3)[:, idx])  # (135, n, 3)
                buffers.setdefault(f"{key}_weights", []).append(layer.lbs_weights[idx])  # (n, 16)
            if "s" in sets:
                normals = rest_normals(layer.v_template.detach().cpu().numpy(), model.faces[h])[sets["s"][h]]
                buffers.setdefault("s_normals", []).append(torch.as_tensor(normals, dtype=layer.v_template.dtype))
        for name, value in buffers.items():
            self.register_buffer(name, torch.stack(value).detach().clone())  # leading axis: hand
        parents = [int(p) for p in layers[0].parents]
        depth = [0] * 16
        for k in range(1, 16):
            depth[k] = depth[parents[k]] + 1
        appended = [0]  # joint ids in the order _pose() appends them
        self.levels = []
        for d in range(1, max(depth) + 1):
            kids = [k for k in range(16) if depth[k] == d]
            # (joints, their parents, where the parents' transforms are in the appended list)
            self.levels.append((kids, [parents[k] for k in kids], [appended.index(parents[k]) for k in kids]))
            appended += kids
        self.level_order = [appended.index(k) for k in range(16)]
        # the same as index tensors: indexing with Python lists converts them on every call
        for d, (kids, parents_, at) in enumerate(self.levels):
            for name, ids in (("kids", kids), ("parents", parents_), ("at", at)):
                self.register_buffer(f"_level{d}_{name}", torch.as_tensor(ids), persistent=False)
        self.register_buffer("_level_order", torch.as_tensor(self.level_order), persistent=False)
        self.register_buffer("reorder", model.reorder.clone())
        self._landmark_buffers(landmarks, parents)

    def _landmark_buffers(self, landmarks: LandmarkDefinition | None, parents: list[int]) -> None:
        """Step 6's constants: the (landmark l, joint k) pairs whose lever is not zero, ours order, and
        with a definition its combination weights times the vertices' skinning weights."""
        sub = np.eye(16, dtype=bool)  # sub[m, k]: joint m is k or below it
        for m in range(16):
            k = parents[m]
            while k >= 0:
                sub[m, k] = True
                k = parents[k]
        self.has_landmarks = landmarks is not None
        if landmarks is None:  # the joints: each rigid on its own joint, a fingertip on its finger's last
            anchor = np.array(list(range(16)) + [15, 3, 6, 12, 9])  # MANO-21 point -> the joint carrying it
            moves = sub[anchor]  # (21, 16) MANO-21 rows
            moves[np.arange(16), np.arange(16)] = False  # a joint's own rotation leaves it in place
            pairs = np.zeros((21, 16), bool)
            pairs[list(OURS_OF_MANO21)] = moves
        else:
            K = landmarks.vertex_ids.shape[-1]
            comb = torch.as_tensor(landmarks.weights, dtype=self.l_weights.dtype)  # (2, 21, K)
            cw = comb[..., None] * self.l_weights.reshape(2, 21, K, 16)  # (2, 21, K, 16)
            sub_t = torch.as_tensor(sub, dtype=cw.dtype)
            self.register_buffer("l_cw", cw)
            self.register_buffer("l_sub", sub_t)
            self.register_buffer("l_S", cw.sum(2) @ sub_t)  # (2, 21, 16) S_lk
            pairs = (self.l_S > 1e-6).any(0).numpy()
        pl, pk = np.nonzero(pairs)
        self.register_buffer("pair_landmark", torch.as_tensor(pl), persistent=False)
        self.register_buffer("pair_joint", torch.as_tensor(pk), persistent=False)

    def _pose(self, global_orient, hand_pose, betas, hands):
        """Steps 1-3 -> rest joints J (B, H, 16, 3), pose feature (B, H, 135), G_rot, G_pos, betas (B, H, 10)."""
        B, H = global_orient.shape[:2]
        if betas.dim() == 2:
            betas = betas.unsqueeze(0).expand(B, -1, -1)
        # 1.
        J = self.j_template[hands] + torch.einsum("hjcb,nhb->nhjc", self.j_dirs[hands], betas)  # (B, H, 16, 3)
        # 2.
        pose = torch.cat([global_orient, hand_pose + self.pose_mean[hands]], dim=-1).reshape(B, H, 16, 3)
        R = rodrigues_to_matrix_torch(pose)  # (B, H, 16, 3, 3)
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        feature = (R[:, :, 1:] - eye).reshape(B, H, 135)
        # 3. level by level down the tree (MANO's is 3 deep below the wrist: 5 fingers x 3 joints)
        G_rot = R[:, :, :1]  # (B, H, 1, 3, 3)
        G_pos = J[:, :, :1]  # (B, H, 1, 3)
        for d in range(len(self.levels)):
            kids, parents, at = (getattr(self, f"_level{d}_{n}") for n in ("kids", "parents", "at"))
            pr, pp = G_rot[:, :, at], G_pos[:, :, at]  # (B, H, 5, 3, 3), (B, H, 5, 3) parents' transforms
            bone = (J[:, :, kids] - J[:, :, parents]).unsqueeze(-1)  # (B, H, 5, 3, 1)
            G_rot = torch.cat([G_rot, pr @ R[:, :, kids]], dim=2)
            G_pos = torch.cat([G_pos, pp + (pr @ bone).squeeze(-1)], dim=2)
        order = self._level_order  # joints were appended level by level: back to MANO's order
        return J, feature, G_rot[:, :, order], G_pos[:, :, order], betas  # (B, H, 16, 3, 3), (B, H, 16, 3)

    def _moved(self, key: str, hands: slice, J, feature, G_rot, G_pos, betas) -> torch.Tensor:
        """Steps 1, 2 and 4 before the blend, for vertex set ``key`` -> (B, H, n, 16, 3): each vertex as
        each joint's transform moves it (before transl)."""
        v = getattr(self, f"{key}_template")[hands] + torch.einsum(
            "hvcb,nhb->nhvc", getattr(self, f"{key}_dirs")[hands], betas)  # (B, H, n, 3)
        v = v + torch.einsum("nhp,hpvc->nhvc", feature, getattr(self, f"{key}_posedirs")[hands])
        return torch.einsum("nhkab,nhvkb->nhvka", G_rot, v[:, :, :, None] - J[:, :, None]) + G_pos[:, :, None]

    def _skin(self, key: str, hands: slice, J, feature, G_rot, G_pos, betas) -> torch.Tensor:
        """Steps 1, 2, 4 for vertex set ``key`` -> (B, H, n, 3) posed, before transl."""
        moved = self._moved(key, hands, J, feature, G_rot, G_pos, betas)
        return torch.einsum("hvk,nhvka->nhva", getattr(self, f"{key}_weights")[hands], moved)  # (B, H, n, 3)

    def forward(self, global_orient: torch.Tensor, hand_pose: torch.Tensor, betas: torch.Tensor,
                transl: torch.Tensor, hands: slice = slice(0, 2)) -> torch.Tensor:
        """(B, H, 3), (B, H, 45), (H, 10) or (B, H, 10), (B, H, 3) -> (B, H, 21, 3) joints, ours.

        H = 2 (left, right) by default; ``hands=slice(1, 2)`` poses the right hand alone (H = 1).
        ``last_rotations`` keeps the joints' world rotations (B, H, 16, 3, 3) for Jacobians."""
        J, feature, G_rot, G_pos, betas = self._pose(global_orient, hand_pose, betas, hands)
        self.last_rotations, self.last_positions = G_rot, G_pos
        tips = self._skin("t", hands, J, feature, G_rot, G_pos, betas)  # (B, H, 5, 3)
        # 5.
        mano21 = torch.cat([G_pos, tips], dim=2) + transl[:, :, None]  # (B, H, 21, 3)
        return mano21[:, :, self.reorder]

    def surface(self, global_orient: torch.Tensor, hand_pose: torch.Tensor, betas: torch.Tensor,
                transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both hands' surface subset: points (B, 2, K, 3) and unit normals (B, 2, K, 3)."""
        hands = slice(0, 2)
        J, feature, G_rot, G_pos, betas = self._pose(global_orient, hand_pose, betas, hands)
        points = self._skin("s", hands, J, feature, G_rot, G_pos, betas) + transl[:, :, None]
        turn = torch.einsum("hvk,nhkab->nhvab", self.s_weights, G_rot)  # (B, 2, K, 3, 3)
        normals = torch.einsum("nhvab,hvb->nhva", turn, self.s_normals)
        return points, normals / torch.linalg.norm(normals, dim=-1, keepdim=True).clamp(min=1e-12)

    def landmarks(self, global_orient: torch.Tensor, hand_pose: torch.Tensor, betas: torch.Tensor,
                  transl: torch.Tensor, levers: bool = False):
        """Step 6: both hands' landmarks (B, 2, 21, 3), ours order; the joints without a definition.
        ``levers``: also each pair's lever (B, 2, P, 3) for the pairs (``pair_landmark``, ``pair_joint``),
        and ``last_rotations`` set as ``forward`` does."""
        if not self.has_landmarks:
            L = self(global_orient, hand_pose, betas, transl)
            if not levers:
                return L
            p = self.last_positions + transl[:, :, None]  # (B, 2, 16, 3) joints, MANO order
            return L, L[:, :, self.pair_landmark] - p[:, :, self.pair_joint]
        hands = slice(0, 2)
        J, feature, G_rot, G_pos, betas = self._pose(global_orient, hand_pose, betas, hands)
        self.last_rotations = G_rot
        B = global_orient.shape[0]
        K = self.l_cw.shape[2]
        moved = self._moved("l", hands, J, feature, G_rot, G_pos, betas).reshape(B, 2, 21, K, 16, 3)
        Q = torch.einsum("hlkm,nhlkma->nhlma", self.l_cw, moved)  # (B, 2, 21, 16, 3): joint m's part of L_l
        L = Q.sum(3) + transl[:, :, None]
        if not levers:
            return L
        Qsub = torch.einsum("nhlma,mk->nhlka", Q, self.l_sub)  # (B, 2, 21, 16, 3): the part k's turn moves
        lever = Qsub - self.l_S[None, ..., None] * G_pos[:, :, None]  # (B, 2, 21, 16, 3)
        return L, lever[:, :, self.pair_landmark, self.pair_joint]
